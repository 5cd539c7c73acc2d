"""A crash-safe journal of live background responses: the Protocol, its records, ``open_journal``.

A background response outlives the process that started it: after a SIGKILL (the OOM killer,
a deploy, a crash) nobody cancels it. With a journal, every guarded background stream records
an *intent* before its request is sent, its response id once known, and removes the entry
once the response is known to have stopped. Every entry names its *owner* (host, process, a
random instance id), and the owner renews a *lease* while its scope is open. Whatever a dead
owner left is what [`reap`][tether.reap] (or ``tether reap``) cancels once the lease ran out,
and [`request_cancel`][tether.request_cancel] stops a stream from any process.

Three stores are built in (each in its own module): SQLite (one machine, the default, no
server), Redis and PostgreSQL (a fleet). [`open_journal`][tether.open_journal] picks one from
a URL or a path.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, final, runtime_checkable

import attrs

from ._errors import TetherError
from ._process import process_identity
from ._redact import redact_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "DEFAULT_LEASE",
    "Journal",
    "JournalEntry",
    "JournalError",
    "close_if_opened",
    "default_journal_path",
    "open_journal",
]

DEFAULT_LEASE = 10.0
"""Seconds an owner's lease lasts without a renewal (renewed every third of it)."""


class JournalError(TetherError):
    """The journal's store failed, is missing, or is not a journal.

    The message names the store (a path, or a URL without its password) and what went wrong.

    Example:
        ```python
        try:
            report = await tether.reap(client, "/no/such/journal.sqlite3")
        except tether.JournalError as exc:
            print(exc)  # no journal at /no/such/journal.sqlite3 ...
        ```
    """


@final
@attrs.frozen(kw_only=True)
class JournalEntry:
    """One response an owner started and has not yet seen stop.

    Example:
        ```python
        for entry in await journal.entries():
            print(entry.key, entry.response_id or "(no id yet)", entry.host, entry.alive)
        ```
    """

    @final
    @attrs.frozen(kw_only=True)
    class Owner:
        """Who holds a journal's entries: one journal object, in one process, on one host
        (``journal.owner``). An entry names its owner by the same facts: ``host``, ``pid``,
        ``owner`` (the instance) and ``owner_process``.

        Example:
            ```python
            print(journal.owner.host, journal.owner.pid, journal.owner.instance)
            ```
        """

        host: str
        """``socket.gethostname()`` of the owner."""
        pid: int
        """The owner's process id."""
        instance: str
        """A random id, new for every journal object (a pid can be reused; this cannot)."""
        process: str | None = None
        """Which process *pid* is, on Linux: ``BOOT/PIDNS/START`` (the kernel's boot id, the pid
        namespace, the process's start time in clock ticks), so that a reaper in the same kernel
        and namespace can tell a dead owner (or a reused pid) at once; ``None`` elsewhere."""

        @classmethod
        def here(cls) -> JournalEntry.Owner:
            """A new owner for this process."""
            pid = os.getpid()
            return cls(
                host=socket.gethostname(),
                pid=pid,
                instance=uuid.uuid4().hex,
                process=process_identity(pid),
            )

    intent: str
    """A random id, recorded before the request was sent."""
    key: str | None
    """The job key given to [`guarded_stream`][tether.guarded_stream] (``key=``), if any."""
    response_id: str | None
    """The response's id, once ``response.created`` arrived (``None`` if the owner died first)."""
    model: str | None
    """The model asked for."""
    base_url: str
    """The API the response lives on (never the API key)."""
    host: str
    """The owner's host."""
    pid: int
    """The owner's process."""
    owner: str
    """The owner's instance id ([`Owner.instance`][tether.journal.JournalEntry.Owner.instance])."""
    created_at: float
    """Wall-clock time (``time.time()``) of the intent."""
    alive: bool
    """Whether the owner's lease was current when the entry was read (on the store's clock)."""
    lease_until: float | None = attrs.field(default=None, eq=False)
    """Wall-clock time (``time.time()``) the owner's lease runs out, if it is current (a
    reading, renewed by every heartbeat: not part of the entry's equality)."""
    owner_process: str | None = None
    """The owner's [`Owner.process`][tether.journal.JournalEntry.Owner.process], if its store recorded it."""


@runtime_checkable
class Journal(Protocol):
    """Where guarded streams record their live background responses, and hear cancel requests.

    Built in, behind [`open_journal`][tether.open_journal]: SQLite, Redis, PostgreSQL. Every
    method must be durable when it returns, must not block the event loop, and must return or raise within a bounded time (socket or
    statement timeouts): the stop path calls them under a bounded shield. A store failure is a
    [`JournalError`][tether.JournalError] naming the store.

    What a stream calls, in order: ``intend`` before its request is sent (if it fails, no
    request is sent), ``started`` once the id is known, ``finished`` once the response is
    known to have stopped. What a scope holds for its lifetime: ``attach``. What the fleet
    tools call: ``check``, ``entries``, ``claim``, ``release``, ``request``.

    Example:
        ```python
        journal = tether.open_journal("redis://127.0.0.1:6379/0", lease=10.0)
        async with tether.open_scope(client, journal=journal) as scope: ...
        ```
    """

    lease: float
    """Seconds the owner's lease lasts without a renewal."""
    owner: JournalEntry.Owner
    """Who this journal object writes entries as."""

    async def intend(
        self, intent: str, *, key: str | None, model: str | None, base_url: str
    ) -> None:
        """Record that a request for a background response is about to be sent."""
        ...

    async def started(self, intent: str, response_id: str) -> None:
        """Record the id of the response *intent* started."""
        ...

    async def finished(self, intent: str) -> None:
        """Forget *intent*: its response is known to have stopped (or was never started)."""
        ...

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished, oldest first, each with its owner's liveness."""
        ...

    def attach(
        self, on_cancel: Callable[[str], Awaitable[None]]
    ) -> AbstractAsyncContextManager[None]:
        """Hold the owner's lease, and hear cancel requests, for the ``async with`` block.

        On entry the lease is written (a store that is down fails here, fast, with a
        [`JournalError`][tether.JournalError]). Inside, a heartbeat renews the lease every
        ``lease / 3`` seconds in a task of its own (each renewal bounded by the store's
        timeout), and a listener calls ``await on_cancel(key)``, in a task of its own, when a
        cancel is requested for a key this owner holds an entry of. Store failures inside
        are logged and retried, never raised into the block. The block's exception leaves
        unchanged (never wrapped in an ``ExceptionGroup``), cancellation is never swallowed,
        and the exit is bounded (the lease is dropped when the last attach of this journal
        object exits, so leftovers are reapable at once).
        """
        ...

    async def check(self) -> None:
        """Raise [`JournalError`][tether.JournalError] unless a journal is there; never create one."""
        ...

    async def claim(
        self, intents: Sequence[str], *, ttl: float, include_live: bool = False
    ) -> list[JournalEntry]:
        """Atomically claim the entries among *intents* that a reaper may cancel now.

        An entry is claimable if its owner's lease ran out (or *include_live*) and no other
        claim on it is current. A claim lasts *ttl* seconds; two reapers never both get one.
        """
        ...

    async def release(self, intent: str) -> None:
        """Drop the claim on *intent* (its cancel was not confirmed: the next reap retries)."""
        ...

    async def request(self, key: str) -> int:
        """Publish a cancel request for *key* to every owner; returns how many listeners heard."""
        ...


def default_journal_path() -> Path:
    """The per-user journal: ``$XDG_STATE_HOME/tether/journal.sqlite3`` (``~/.local/state``),
    what ``open_journal()`` and the CLI use when given no path."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tether" / "journal.sqlite3"


_REDIS_SCHEMES = ("redis", "rediss", "unix")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_journal(
    journal: Journal | str | os.PathLike[str] | None = None,
    *,
    lease: float = DEFAULT_LEASE,
    timeout: float = 1.0,
    prefix: str = "tether:",
) -> Journal:
    """A journal from a URL or a path: Redis, PostgreSQL, or an SQLite file.

    Three stores are built in, each behind this one function:

    - ``redis://[:password@]host:port/db``, ``rediss://...`` and ``unix://path``: a Redis
      server shared by every worker of a fleet, on any machine (``pip install
      "tether[redis]"``, redis-py); *prefix* is prepended to every key and to the channel,
      so several journals can share one server.
    - ``postgresql://user:password@host:port/db`` (or ``postgres://``): a PostgreSQL
      database shared the same way (``pip install "tether[postgres]"``, psycopg 3); its
      tables (``tether_entries``, ``tether_owners``) are created by the first write.
    - anything else is the path of an SQLite file (WAL mode, created with its folder and
      mode 0600 on the first write), for the workers of one machine; ``None`` is the
      per-user journal, ``$XDG_STATE_HOME/tether/journal.sqlite3`` (``~/.local/state``).

    Nothing is connected or created until the journal is used. A
    [`Journal`][tether.journal.Journal] (a store of your own) is returned as it is. URLs
    are shown without their password in reprs, errors and logs.

    Args:
        journal: A URL, a path, a journal, or ``None`` for the per-user SQLite journal.
        lease: Seconds an owner's entries stay untouchable after its last renewal.
        timeout: Seconds each store call may take: a socket operation (Redis), a statement
            (PostgreSQL; a connection attempt at least 2 s, libpq's minimum), the wait for
            another process's lock (SQLite).
        prefix: Redis only: prepended to every key and to the channel.

    Returns:
        A [`Journal`][tether.journal.Journal].

    Raises:
        TypeError: *journal* is none of these, or *prefix* is not a str.
        ValueError: *lease* or *timeout* is not a positive number, an unknown URL scheme,
            or a *prefix* other than the default for a store that is not Redis.

    Example:
        ```python
        journal = tether.open_journal("redis://127.0.0.1:6379/0", lease=10.0)
        ```

    Added in version 0.2.
    """
    if isinstance(journal, Journal):
        return journal
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {prefix!r}")
    if journal is None:
        journal = default_journal_path()
    scheme = ""
    if isinstance(journal, str):
        scheme = journal.split("://", 1)[0].lower() if "://" in journal else ""
        if scheme in _REDIS_SCHEMES:
            from ._journal_redis import RedisJournal

            return RedisJournal(journal, lease=lease, timeout=timeout, prefix=prefix)
        if scheme and scheme not in _POSTGRES_SCHEMES:
            raise ValueError(
                f"journal must be a path or a redis://, rediss://, postgresql:// URL, "
                f"got {redact_url(journal)!r}"
            )
    if prefix != "tether:":
        raise ValueError(
            f"prefix is for redis:// journals only, got prefix={prefix!r} for "
            f"{redact_url(journal) if isinstance(journal, str) else journal!r}"
        )
    if scheme in _POSTGRES_SCHEMES:
        from ._journal_postgres import PostgresJournal

        return PostgresJournal(str(journal), lease=lease, timeout=timeout)
    if isinstance(journal, (str, os.PathLike)):
        from ._journal_sqlite import SqliteJournal

        return SqliteJournal(journal, lease=lease, timeout=timeout)
    raise TypeError(
        f"journal must be a tether.journal.Journal, a URL, a path or None, got {journal!r}"
    )


class _Closable(Protocol):
    def close(self) -> None: ...


def close_if_opened(given: object, journal: Journal) -> None:
    """Close *journal*'s connections if ``open_journal(given)`` opened it from a URL or a
    path; a journal object passed in as *given* is its owner's to close."""
    if journal is given:
        return
    try:
        cast("_Closable", journal).close()  # one of the built-in journals: each has close()
    except Exception:  # never mask what ended the block with a cleanup error
        logging.getLogger("tether.journal").warning(
            "closing the journal %s failed", redact_url(str(given)), exc_info=True
        )
