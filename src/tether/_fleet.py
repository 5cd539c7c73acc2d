"""The fleet tools: ``reap`` what dead owners left, ``request_cancel`` a key from anywhere.

Both open the journal without ever creating one (``check`` first: a typo is an error, not
an empty journal), both cancel through the one shielded path (``cancel_on_server``), both
claim an entry atomically before they cancel it, so that two of them at once cancel and
report each response once. Neither ever touches an entry whose owner's lease is current:
a live owner stops its own streams (it hears ``request_cancel`` through the journal).
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import TYPE_CHECKING, final

import anyio
import attrs

from ._cancel import cancel_on_server
from ._compat import check_async_client
from ._journal import (
    Journal,
    JournalEntry,
    close_if_opened,
    open_journal,
)
from ._process import owner_gone, owner_on_this_machine
from ._validate import check_bool, check_non_negative, check_positive

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ._outcome import CancelReceipt

__all__ = ["CancelRequestReport", "ReapReport", "reap", "request_cancel"]

_CLAIM_MARGIN = 10.0  # seconds a claim outlives the cancels' grace (then another reaper may retry)
_CONFIRM_POLL = 0.1  # seconds between two reads of the journal while a live owner stops
_CONCURRENCY = 32  # cancels in flight at once: each one's grace starts when it is sent


def _claim_ttl(count: int, grace: float) -> float:
    """Long enough for every cancel of one claim, in batches of ``_CONCURRENCY``."""
    return grace * math.ceil(max(count, 1) / _CONCURRENCY) + _CLAIM_MARGIN


@final
@attrs.frozen(kw_only=True)
class ReapReport:
    """What [`reap`][tether.reap] found in a journal, and what it did.

    Example:
        ```python
        report = await tether.reap(client, "redis://127.0.0.1:6379/0")
        print(len(report.cancelled), "cancelled;", len(report.skipped), "of live owners")
        ```
    """

    found: tuple[JournalEntry, ...]
    """Every entry the journal held."""
    cancelled: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries whose response is now known stopped (cancelled, or finished before), removed."""
    failed: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries whose cancel could not be confirmed within grace: kept, for the next reap."""
    unknown: tuple[JournalEntry, ...]
    """Intents whose owner died before ``response.created``: no id to cancel; removed."""
    skipped: tuple[JournalEntry, ...]
    """Entries of a live owner (its lease is current), or of another API than the client's."""
    taken: tuple[JournalEntry, ...] = ()
    """Entries another reaper claimed first (it cancels and reports them), or whose owner
    renewed its lease meanwhile."""
    reasons: dict[str, str] = attrs.field(factory=lambda: dict[str, str]())
    """Why each skipped entry was skipped, by intent: ``"lease held by live owner HOST:PID
    until HH:MM:SS"``, ``"owner on another host, lease current until HH:MM:SS"``, or
    ``"another API base URL (URL)"``."""


@final
@attrs.frozen(kw_only=True)
class CancelRequestReport:
    """What [`request_cancel`][tether.request_cancel] found for a key, and what it did.

    Example:
        ```python
        report = await tether.request_cancel(journal, key="conversation-42", client=client)
        assert report.ok, report
        ```
    """

    key: str
    """The key asked for."""
    found: tuple[JournalEntry, ...]
    """Every entry of the key the journal held."""
    listeners: int
    """How many owners' listeners the request reached (as the store counts them)."""
    stopped: tuple[JournalEntry, ...]
    """Entries of live owners that the owner stopped (its entry gone) within ``wait``."""
    unconfirmed: tuple[JournalEntry, ...]
    """Entries of live owners still there after ``wait`` (a slow cancel, a lost message):
    ask again, or reap once the owner's lease runs out."""
    cancelled: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries of dead owners cancelled here (with ``client``), removed."""
    failed: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries of dead owners whose cancel here was not confirmed within grace: kept."""
    unknown: tuple[JournalEntry, ...]
    """Entries of dead owners that never got a response id: nothing to cancel; removed."""
    left: tuple[JournalEntry, ...]
    """Entries of dead owners not cancelled here: no ``client``, another API, or another
    reaper claimed them first."""

    @property
    def ok(self) -> bool:
        """Whether something was found and every response of the key is known stopped."""
        return bool(self.found) and not (self.unconfirmed or self.failed or self.left)


def _until(entry: JournalEntry) -> str:
    if entry.lease_until is None:
        return "its lease runs out"
    return time.strftime("%H:%M:%S", time.localtime(entry.lease_until))


def _why_skipped(entry: JournalEntry, base_url: str) -> str:
    """Why a reaper leaves *entry* alone (it is of another API, or its owner's lease holds)."""
    if entry.base_url != base_url:
        return f"another API base URL ({entry.base_url})"
    owner = f"{entry.host}:{entry.pid}"
    if owner_on_this_machine(entry.owner_process):
        return f"lease held by live owner {owner} until {_until(entry)}"
    if entry.host == socket.gethostname() and entry.owner_process is None:
        return (
            f"lease held by owner {owner} until {_until(entry)} (its process is not checkable here)"
        )
    return f"owner on another host, lease current until {_until(entry)}"


def _judge(entries: list[JournalEntry]) -> tuple[list[JournalEntry], set[str]]:
    """*entries* with the owners known dead here marked dead, and their intents.

    An owner whose lease is current but whose process, on this machine, no longer exists
    (or whose pid now names another process: its start time differs) is dead now: there
    is no need to wait for its lease to run out.
    """
    gone = {e.intent for e in entries if e.alive and owner_gone(e.owner_process, e.pid)}
    judged = [
        attrs.evolve(e, alive=False, lease_until=None) if e.intent in gone else e for e in entries
    ]
    return judged, gone


async def _claim(
    store: Journal, entries: list[JournalEntry], gone: set[str], *, ttl: float, include_live: bool
) -> list[JournalEntry]:
    """Claim *entries*: those of owners known dead here although their lease is current too."""
    expired = [e.intent for e in entries if e.intent not in gone]
    claimed = await store.claim(expired, ttl=ttl, include_live=include_live) if expired else []
    dead_here = [e.intent for e in entries if e.intent in gone]
    if dead_here:
        claimed += await store.claim(dead_here, ttl=ttl, include_live=True)
    return claimed


def _fleet_journal(journal: Journal | str | os.PathLike[str] | None) -> Journal:
    if journal is not None and not isinstance(journal, (str, os.PathLike, Journal)):
        raise TypeError(
            f"journal must be a tether.journal.Journal, a URL or a path, got {journal!r}"
        )
    return open_journal(journal)


async def _cancel_claimed(
    store: Journal, client: AsyncOpenAI, claimed: list[JournalEntry], grace: float
) -> tuple[
    list[tuple[JournalEntry, CancelReceipt]],
    list[tuple[JournalEntry, CancelReceipt]],
    list[JournalEntry],
]:
    """Cancel what this caller claimed; remove what is known stopped, release the rest."""
    unknown = [e for e in claimed if e.response_id is None]
    targets = [e for e in claimed if e.response_id is not None]
    receipts: dict[str, CancelReceipt] = {}
    limiter = anyio.CapacityLimiter(_CONCURRENCY)

    async def cancel(entry: JournalEntry) -> None:
        assert entry.response_id is not None
        async with limiter:
            receipts[entry.intent] = await cancel_on_server(client, entry.response_id, grace=grace)

    async with anyio.create_task_group() as tg:
        for entry in targets:
            tg.start_soon(cancel, entry)
    cancelled = [(e, receipts[e.intent]) for e in targets if receipts[e.intent].stopped]
    failed = [(e, receipts[e.intent]) for e in targets if not receipts[e.intent].stopped]
    for entry in [e for e, _ in cancelled] + unknown:
        await store.finished(entry.intent)
    for entry, _ in failed:
        await store.release(entry.intent)
    return cancelled, failed, unknown


async def reap(
    client: AsyncOpenAI,
    journal: Journal | str | os.PathLike[str] | None = None,
    *,
    grace: float = 5.0,
    include_live: bool = False,
) -> ReapReport:
    """Cancel every response that a dead owner (its lease ran out) left in the journal.

    Entries whose owner's lease is current are skipped: their owner will stop them. Except
    on the owner's own machine (Linux): there an owner whose process no longer exists (or
    whose pid now names another process, told apart by its start time) is dead now, and its
    entries are reaped at once, without waiting for its lease. So are entries of another API than *client*'s. Every other entry is claimed
    atomically first (two reapers at once: each response is cancelled and reported by one),
    then the cancels run concurrently (32 at a time, each within its own *grace*), each
    through the same shielded path as a guarded stream's. Idempotent: a response already stopped is just removed. Never creates a
    journal.

    Args:
        client: An ``openai.AsyncOpenAI`` for the API the responses live on.
        journal: A [`Journal`][tether.journal.Journal], a URL or a path (default: the per-user journal).
        grace: Seconds each cancel may take, retries included.
        include_live: Also cancel the entries of owners whose lease is current (an owner
            you know is gone but whose lease has not run out yet).

    Returns:
        A [`ReapReport`][tether.journal.ReapReport].

    Raises:
        JournalError: No journal there, not a journal, or the store failed.
        TypeError, ValueError: A bad argument (checked before anything is sent).

    Example:
        ```python
        report = await tether.reap(openai.AsyncOpenAI(), "redis://127.0.0.1:6379/0")
        ```

    Added in version 0.1.
    """
    client = check_async_client(client)
    grace = check_positive("grace", grace)
    include_live = check_bool("include_live", include_live)
    store = _fleet_journal(journal)
    try:
        return await _reap(store, client, grace=grace, include_live=include_live)
    finally:
        close_if_opened(journal, store)


async def _reap(
    store: Journal, client: AsyncOpenAI, *, grace: float, include_live: bool
) -> ReapReport:
    await store.check()
    entries, gone = _judge(await store.entries())
    base_url = str(client.base_url)
    skipped = [e for e in entries if e.base_url != base_url or (e.alive and not include_live)]
    candidates = [e for e in entries if e not in skipped]
    claimed = await _claim(
        store,
        candidates,
        gone,
        ttl=_claim_ttl(len(candidates), grace),
        include_live=include_live,
    )
    mine = {e.intent for e in claimed}
    cancelled, failed, unknown = await _cancel_claimed(store, client, claimed, grace)
    return ReapReport(
        found=tuple(entries),
        cancelled=tuple(cancelled),
        failed=tuple(failed),
        unknown=tuple(unknown),
        skipped=tuple(skipped),
        taken=tuple(e for e in candidates if e.intent not in mine),
        reasons={e.intent: _why_skipped(e, base_url) for e in skipped},
    )


async def request_cancel(
    journal: Journal | str | os.PathLike[str],
    *,
    key: str,
    client: AsyncOpenAI | None = None,
    grace: float = 5.0,
    wait: float = 5.0,
) -> CancelRequestReport:
    """Stop every stream of *key*, whichever process or machine owns it.

    Publishes the request through the journal (Redis pub/sub, PostgreSQL ``NOTIFY``, a table
    that SQLite owners poll every 0.2 s): the owner hears it within about a second and stops
    each stream of the key through its normal stop path, with the end reason
    ``"cancel_requested"``. Then this waits, up to *wait* seconds, for the owners to confirm
    (their entries leave the journal: read every 0.1 s). The entries of a dead owner (its
    lease ran out) are cancelled here on the server, if *client* is given; otherwise they
    are left for [`reap`][tether.reap]. Never creates a journal.

    A stream of the key that starts after the request is not stopped by it.

    Args:
        journal: A [`Journal`][tether.journal.Journal], a URL or a path.
        key: The job key the streams were opened with (``guarded_stream(..., key=...)``).
        client: An ``openai.AsyncOpenAI`` for the API, to cancel what a dead owner left.
        grace: Seconds each cancel made here may take, retries included.
        wait: Seconds to wait for live owners to confirm.

    Returns:
        A [`CancelRequestReport`][tether.journal.CancelRequestReport].

    Raises:
        JournalError: No journal there, not a journal, or the store failed.
        TypeError, ValueError: A bad argument (checked before anything is sent).

    Example:
        ```python
        report = await tether.request_cancel(journal, key="conversation-42", client=client)
        print(len(report.stopped), "stopped by their owner,", len(report.cancelled), "here")
        ```

    Added in version 0.2.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty str, got {key!r}")
    if client is not None:
        client = check_async_client(client, argument="client")
    grace = check_positive("grace", grace)
    wait = check_non_negative("wait", wait)
    if journal is None:  # pyright: ignore[reportUnnecessaryComparison] - checked at run time
        raise TypeError(
            "journal must be a tether.journal.Journal, a URL or a path, got None "
            "(request_cancel never picks the per-user journal by itself)"
        )
    store = _fleet_journal(journal)
    try:
        return await _request_cancel(store, key=key, client=client, grace=grace, wait=wait)
    finally:
        close_if_opened(journal, store)


async def _request_cancel(
    store: Journal, *, key: str, client: AsyncOpenAI | None, grace: float, wait: float
) -> CancelRequestReport:
    await store.check()
    found, gone = _judge([e for e in await store.entries() if e.key == key])
    listeners = await store.request(key)  # first: live owners start stopping now
    live = [e for e in found if e.alive]
    dead = [e for e in found if not e.alive]
    cancelled: list[tuple[JournalEntry, CancelReceipt]] = []
    failed: list[tuple[JournalEntry, CancelReceipt]] = []
    unknown: list[JournalEntry] = []
    left = list(dead)
    if client is not None and dead:
        ours = [e for e in dead if e.base_url == str(client.base_url)]
        claimed = await _claim(
            store, ours, gone, ttl=_claim_ttl(len(ours), grace), include_live=False
        )
        cancelled, failed, unknown = await _cancel_claimed(store, client, claimed, grace)
        mine = {e.intent for e in claimed}
        left = [e for e in dead if e.intent not in mine]
    pending = {e.intent for e in live}
    with anyio.move_on_after(wait):
        while pending:
            pending &= {e.intent for e in await store.entries()}
            if pending:
                await anyio.sleep(_CONFIRM_POLL)
    return CancelRequestReport(
        key=key,
        found=tuple(found),
        listeners=listeners,
        stopped=tuple(e for e in live if e.intent not in pending),
        unconfirmed=tuple(e for e in live if e.intent in pending),
        cancelled=tuple(cancelled),
        failed=tuple(failed),
        unknown=tuple(unknown),
        left=tuple(left),
    )
