"""What every built-in journal shares: the owner's lease heartbeat and the cancel listener.

A store implements five hooks (``_renew``, ``_restore``, ``_drop_owner``, ``_listen``,
``_where``); this base runs them for the lifetime of ``attach``. The heartbeat and the
listener each live in a task of the attach's own task group, visibly bounded by the
``async with``; the body's exception leaves unchanged (see ``attach``). Store failures inside
are logged and retried, with a backoff, never raised into the body: a scope does not die
because Redis blinked.

The owner keeps every entry it holds (``_held``), so each heartbeat also asks the store which
of them it lost (a Redis restarted without persistence, a failover to an empty replica) and
writes those again: an entry that was written is never lost while its owner lives. At the
exit, the lease's drop is bounded by the scope's grace (``_journal_bound.within``).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import attrs

from ._journal import DEFAULT_LEASE, JournalEntry
from ._journal_bound import within
from ._validate import check_positive

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["LeasedJournal", "log"]

log = logging.getLogger("tether.journal")

_RETRY_MIN = 0.05
_RETRY_MAX = 2.0


class LeasedJournal:
    """The base of the built-in journals: identity, lease, heartbeat, listener, ``attach``."""

    def __init__(self, *, lease: float = DEFAULT_LEASE, timeout: float = 1.0) -> None:
        self.lease: float = check_positive("lease", lease)
        """Seconds the owner's lease lasts without a renewal (renewed every third of it)."""
        if math.isinf(self.lease):
            raise ValueError(f"lease must be finite, got {lease!r}")
        self.timeout: float = check_positive("timeout", timeout)
        """Seconds each call to the store may take (a socket, statement or lock timeout)."""
        self.owner: JournalEntry.Owner = JournalEntry.Owner.here()
        """Who this journal object writes its entries as."""
        # intent -> entry: this owner's live entries, as written (read by store threads too)
        self._held: dict[str, JournalEntry] = {}
        self._held_lock = threading.Lock()
        self._attached = 0

    def close(self) -> None:
        """Close the journal's connections to its store (more are opened if it is used again).

        A journal that ``open_scope``, [`reap`][tether.reap] or
        [`request_cancel`][tether.request_cancel] opened from a URL or a path is closed by them
        when they are done; a journal object you pass in is yours to close. An SQLite journal
        holds no connection between calls: there is nothing to close.

        Example:
            ```python
            journal = tether.open_journal("redis://127.0.0.1:6379/0")
            try:
                async with tether.open_scope(client, journal=journal) as scope: ...
            finally:
                journal.close()
            ```
        """

    # ------------------------------------------------------------ store hooks

    def _where(self) -> str:
        """The store, for messages (a path, or a URL without its password)."""
        raise NotImplementedError

    async def _renew(self, intents: Sequence[str]) -> list[str]:
        """Write the owner's record with a fresh lease; return which of *intents* the store lacks."""
        raise NotImplementedError

    async def _restore(self, entries: Sequence[JournalEntry]) -> None:
        """Write *entries* again, each unless the store has it (the store lost them)."""
        raise NotImplementedError

    async def _drop_owner(self) -> None:
        """Delete the owner's record: its entries are reapable at once."""
        raise NotImplementedError

    async def _listen(self, post: Callable[[str | None], None]) -> None:
        """Subscribe, ``post(None)``, then ``post(key)`` per cancel request, until cancelled.

        *post* must be called from the event loop's thread (from a worker thread, through
        ``anyio.from_thread.run_sync``). A failure raises: ``attach`` logs and resubscribes.
        """
        raise NotImplementedError

    # ------------------------------------------------------------ bookkeeping

    def _entry(
        self, intent: str, *, key: str | None, model: str | None, base_url: str
    ) -> JournalEntry:
        """A new entry of this owner (what ``intend`` writes, and holds once written)."""
        owner = self.owner
        return JournalEntry(
            intent=intent,
            key=key,
            response_id=None,
            model=model,
            base_url=base_url,
            host=owner.host,
            pid=owner.pid,
            owner=owner.instance,
            created_at=time.time(),
            alive=True,
        )

    def _hold(self, entry: JournalEntry) -> None:
        with self._held_lock:
            self._held[entry.intent] = entry

    def _hold_started(self, intent: str, response_id: str) -> JournalEntry | None:
        """Note *intent*'s response id; the entry as held now (``None`` if not held)."""
        with self._held_lock:
            entry = self._held.get(intent)
            if entry is not None:
                entry = self._held[intent] = attrs.evolve(entry, response_id=response_id)
            return entry

    def _unhold(self, intent: str) -> None:
        """Before the store's removal: a heartbeat's restore never writes it back afterwards."""
        with self._held_lock:
            self._held.pop(intent, None)

    def _holding(self) -> dict[str, JournalEntry]:
        with self._held_lock:
            return dict(self._held)

    # ----------------------------------------------------------------- attach

    @asynccontextmanager
    async def attach(
        self, on_cancel: Callable[[str], Awaitable[None]], *, grace: float | None = None
    ) -> AsyncGenerator[None]:
        """Hold the lease and hear cancel requests for the block (see [`Journal.attach`][tether.journal.Journal.attach]).

        The exit waits at most *grace* seconds (``open_scope`` passes its own), and never more
        than the journal's ``timeout``, for the lease's drop: a store that stalls costs that,
        and the lease then runs out by itself.

        Example:
            ```python
            async with journal.attach(on_cancel=stop_every_stream_of):
                ...  # streams run here
            ```
        """
        await self._renew([])  # fail fast: a store that is down fails the scope's open
        self._attached += 1
        host: BaseException | None = None  # what the block (or the listener's start) raised
        unwrap = False
        try:
            async with anyio.create_task_group() as services:
                try:
                    # The listener posts keys (and None once subscribed) here, from any thread.
                    post, inbox = anyio.create_memory_object_stream[str | None](math.inf)
                    state = _Listening()
                    services.start_soon(self._heartbeat, name="tether journal heartbeat")
                    services.start_soon(self._listen_forever, post, state, name="tether listener")
                    services.start_soon(self._dispatch, inbox, state, services, on_cancel)
                    await state.ready.wait()  # bounded: the store's own timeouts
                    if state.error is not None:
                        raise state.error  # the first subscription failed: fail the open
                    yield
                except BaseException as exc:
                    host = exc
                    raise
                finally:
                    services.cancel_scope.cancel("tether: the scope is closing")
        except BaseExceptionGroup as group:
            # The services never raise: a group holding only the block's exception is the
            # task group's wrapping of it. Anything else (a bug) goes up as it is.
            if host is None or len(group.exceptions) != 1 or group.exceptions[0] is not host:
                raise
            unwrap = True
        finally:
            self._attached -= 1
            if self._attached == 0:
                bound = self.timeout if grace is None else min(grace, self.timeout)
                problem = await within(
                    anyio.current_time() + bound, self._drop_owner, late="no answer in time"
                )
                if problem is not None:  # the lease runs out by itself anyway
                    log.warning("could not drop the lease on %s: %s", self._where(), problem)
        if unwrap:
            assert host is not None
            raise host

    async def _heartbeat(self) -> None:
        interval = self.lease / 3
        delay = interval
        while True:
            await anyio.sleep(delay)
            try:
                await self._renew_and_restore()
            except Exception as exc:
                delay = min(interval, 0.5)
                log.warning(
                    "could not renew the lease on %s (retrying in %.2fs; the lease of %.1fs "
                    "runs out if this goes on): %s",
                    self._where(),
                    delay,
                    self.lease,
                    exc,
                )
            else:
                delay = interval

    async def _renew_and_restore(self) -> None:
        """Renew the lease, and write again whatever entries of this owner the store lost."""
        missing = await self._renew(list(self._holding()))
        if not missing:
            return
        held = self._holding()
        lost = [held[intent] for intent in missing if intent in held]
        if not lost:
            return
        log.warning(
            "the journal %s had lost %d entr%s of this live owner (restarted without "
            "persistence?): writing %s again",
            self._where(),
            len(lost),
            "y" if len(lost) == 1 else "ies",
            "it" if len(lost) == 1 else "them",
        )
        await self._restore(lost)
        # An entry finished while it was being written back is removed again: never a ghost.
        for entry in lost:
            if entry.intent not in self._holding():
                await self.finished(entry.intent)

    async def finished(self, intent: str) -> None:
        """Forget *intent* (each store implements it)."""
        raise NotImplementedError

    async def _dispatch(
        self,
        inbox: MemoryObjectReceiveStream[str | None],
        state: _Listening,
        services: TaskGroup,
        on_cancel: Callable[[str], Awaitable[None]],
    ) -> None:
        async def cancel(key: str) -> None:
            await on_cancel(key)

        with inbox:
            async for key in inbox:
                if key is None:
                    state.ready.set()
                elif any(e.key == key for e in self._holding().values()):  # a key of this owner
                    services.start_soon(cancel, key, name=f"tether cancel {key!r}")

    async def _listen_forever(
        self, post: MemoryObjectSendStream[str | None], state: _Listening
    ) -> None:
        backoff = _RETRY_MIN
        with post:
            while True:
                try:
                    await self._listen(post.send_nowait)
                except Exception as exc:
                    if not state.ready.is_set():  # the first subscription fails the open
                        state.error = exc
                        state.ready.set()
                        return
                    log.warning(
                        "lost the cancel listener on %s (reconnecting in %.2fs): %s",
                        self._where(),
                        backoff,
                        exc,
                    )
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, _RETRY_MAX)
                else:
                    backoff = _RETRY_MIN


@attrs.define
class _Listening:
    """The listener's first subscription: done (``ready``), or failed (``error``)."""

    ready: anyio.Event = attrs.field(factory=anyio.Event)
    error: Exception | None = None
