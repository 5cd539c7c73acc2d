"""The fleet journal on PostgreSQL: entries and leases in tables, cancels by LISTEN/NOTIFY.

The client is psycopg 3's *sync* connection, each call in a worker thread
(``anyio.to_thread``), on a connection from a small pool of this journal's own. psycopg's
``AsyncConnection`` needs asyncio: on trio it fails with ``RuntimeError: no running event
loop`` (checked on psycopg 3.3). A connection per call costs 6 to 9 ms on loopback (measured
here), a pooled one 0.35 to 0.5 ms, hence the pool (at most four idle connections kept).

Every connection has ``connect_timeout``, ``statement_timeout``, ``lock_timeout`` and TCP
keepalives set from ``timeout`` (the scans and claims of ``reap`` and ``request_cancel``,
never on a stop path, get 30 s). None of them helps against a server that accepts and then
stalls (frozen, or a pgbouncer that stalls): libpq has no client-side timeout. A call whose
caller went away (cut at grace: ``_journal_bound``) has its socket shut down, so its thread
ends at once and its connection is closed, never pooled. Leases are
``expires_at`` times on the server's clock (``now()``), so hosts whose clocks disagree still
agree on who is alive. A reaper claims entries with one ``UPDATE ... FROM (SELECT ... FOR
UPDATE SKIP LOCKED) RETURNING``: two reapers never claim the same entry. Cancel requests are
``NOTIFY tether_cancel, key``; each attached owner ``LISTEN``s on a connection of its own.

The server's failures: down when a scope opens, the open fails with a
[`JournalError`][tether.JournalError] naming the URL (never its password); down mid-run,
the stream's calls fail within the timeout, the heartbeat and the listener log, retry and
reconnect. A notification sent while an owner was reconnecting is not delivered:
[`request_cancel`][tether.request_cancel] reports it as not confirmed.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio

from ._journal import DEFAULT_LEASE, JournalEntry, JournalError
from ._journal_bound import Interrupt, in_thread
from ._journal_lease import LeasedJournal
from ._redact import redact_url, scrub
from ._validate import check_str

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = ["PostgresJournal"]

T = TypeVar("T")

_POLL = 0.25  # the listener's longest wait for a notification before it checks for cancellation
_IDLE = 4  # pooled connections kept
_SLOW_MS = 30_000  # statement timeout of reap's and request_cancel's scans and claims
_LOCK_ID = 0x7E7E_0002  # the advisory lock that serialises schema creation
_CHANNEL = "tether_cancel"
_COLUMNS = "intent, key, response_id, model, base_url, host, pid, owner, created_at"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tether_entries (
    intent text PRIMARY KEY, key text, response_id text, model text, base_url text NOT NULL,
    host text NOT NULL, pid integer NOT NULL, owner text NOT NULL,
    created_at double precision NOT NULL, claimed_by text, claim_expires timestamptz
);
CREATE INDEX IF NOT EXISTS tether_entries_key ON tether_entries (key);
CREATE TABLE IF NOT EXISTS tether_owners (
    instance text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL,
    expires_at timestamptz NOT NULL
);
ALTER TABLE tether_owners ADD COLUMN IF NOT EXISTS process text;
"""
_ALIVE = (
    "EXISTS (SELECT 1 FROM tether_owners o WHERE o.instance = e.owner AND o.expires_at > now())"
)


def _shut_down(fd: int) -> None:
    """Shut a connection's socket down (from another thread): a call blocked on it fails."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


_INSERT = (
    f"INSERT INTO tether_entries ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (intent) DO NOTHING"
)


def _values(entry: JournalEntry) -> tuple[object, ...]:
    return (
        *(entry.intent, entry.key, entry.response_id, entry.model, entry.base_url),
        *(entry.host, entry.pid, entry.owner, entry.created_at),
    )


def _close_all(connections: list[Any]) -> None:
    while connections:
        connections.pop().close()


def _entry(
    row: tuple[Any, ...], alive: bool, lease_until: Any = None, process: Any = None
) -> JournalEntry:
    intent, key, rid, model, base_url, host, pid, owner, created = row
    return JournalEntry(
        intent=intent,
        key=key,
        response_id=rid,
        model=model,
        base_url=base_url,
        host=host,
        pid=int(pid),
        owner=owner,
        created_at=float(created),
        alive=alive,
        lease_until=float(lease_until) if alive and lease_until is not None else None,
        owner_process=process,
    )


@final
class PostgresJournal(LeasedJournal):
    """A journal in a PostgreSQL database, shared by every worker of a fleet, on any machine.

    Needs ``pip install "tether[postgres]"`` (psycopg 3). Nothing connects until first used;
    the tables (``tether_entries``, ``tether_owners``) are created by the first write.

    Args:
        url: A libpq URL: ``postgresql://user:password@host:port/db``.
        lease: Seconds an owner's entries stay untouchable after its last renewal.
        timeout: Seconds each statement may take (and a connection attempt: at least 2 s,
            libpq's minimum).

    Example:
        ```python
        journal = tether.open_journal("postgresql://app@db/app", lease=10.0)
        async with tether.open_scope(client, journal=journal) as scope: ...
        ```
    """

    def __init__(self, url: str, *, lease: float = DEFAULT_LEASE, timeout: float = 1.0) -> None:
        check_str("url", url)
        super().__init__(lease=lease, timeout=timeout)
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - the extra is in dev
            raise ImportError(
                'a postgresql:// journal needs psycopg 3: pip install "tether[postgres]"'
            ) from exc
        self._psycopg: Any = psycopg
        self.url = url
        """The database's URL (shown without its password)."""
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._ready = False
        # A journal dropped without close(): its pooled connections are closed with it.
        weakref.finalize(self, _close_all, self._idle)

    def __repr__(self) -> str:
        return f"PostgresJournal({redact_url(self.url)!r})"

    def _where(self) -> str:
        return redact_url(self.url)

    # ----------------------------------------------------------------- plumbing

    def _connect(self) -> Any:
        millis = max(1, int(self.timeout * 1000))
        return self._psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self.timeout)),
            options=f"-c statement_timeout={millis} -c lock_timeout={millis}",
            keepalives=1,
            keepalives_idle=max(1, math.ceil(self.timeout)),
            keepalives_interval=1,
            keepalives_count=2,
            tcp_user_timeout=millis * 2,
            application_name="tether journal",
        )

    def _error(self, exc: Exception) -> JournalError:
        text = scrub(" ".join(str(exc).split()), self.url)
        if isinstance(exc, self._psycopg.errors.UndefinedTable):
            return JournalError(f"no tether journal in {self._where()} (no tether_entries table)")
        return JournalError(f"the journal {self._where()} failed: {type(exc).__name__}: {text}")

    def _run(self, create: bool, work: Callable[[Any], T], interrupt: Interrupt) -> T:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = self._connect()
            # A caller that went away (cut at grace) shuts the socket down: the call fails
            # at once instead of waiting for a frozen server (libpq has no timeout of its own).
            interrupt.arm(partial(_shut_down, conn.pgconn.socket))
            if create and not self._ready:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                    conn.execute(_SCHEMA)
                self._ready = True
            result = work(conn)
        except Exception as exc:
            interrupt.disarm()
            if conn is not None:
                conn.close()  # its state is unknown: never back in the pool
            raise self._error(exc) from None
        interrupt.disarm()
        with self._lock:
            if len(self._idle) < _IDLE and not conn.closed:
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()
        return result

    async def _call(self, work: Callable[[Any], T], *, create: bool = False) -> T:
        interrupt = Interrupt()
        return await in_thread(self._run, create, work, interrupt, interrupt=interrupt)

    async def _sql(
        self, sql: str, *params: object, create: bool = False, slow: bool = False
    ) -> list[tuple[Any, ...]]:
        def work(conn: Any) -> list[tuple[Any, ...]]:
            if not slow:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
            with conn.transaction():  # a fleet tool's scan or claim: not on a stop path
                conn.execute(f"SET LOCAL statement_timeout = {_SLOW_MS}")
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []

        return await self._call(work, create=create)

    def close(self) -> None:
        """Close the pooled connections (more are opened if the journal is used again).

        Example:
            ```python
            journal.close()
            ```
        """
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
        _close_all(idle)

    # ------------------------------------------------------------- the stream's

    async def intend(
        self, intent: str, *, key: str | None, model: str | None, base_url: str
    ) -> None:
        """Record an intent (see [`Journal`][tether.journal.Journal])."""
        entry = self._entry(intent, key=key, model=model, base_url=base_url)
        await self._sql(_INSERT, *_values(entry), create=True)
        self._hold(entry)

    async def started(self, intent: str, response_id: str) -> None:
        """Record a response id (see [`Journal`][tether.journal.Journal])."""
        self._hold_started(intent, response_id)
        await self._sql(
            "UPDATE tether_entries SET response_id = %s WHERE intent = %s", response_id, intent
        )

    async def finished(self, intent: str) -> None:
        """Forget an entry (see [`Journal`][tether.journal.Journal])."""
        self._unhold(intent)
        await self._sql("DELETE FROM tether_entries WHERE intent = %s", intent)

    # --------------------------------------------------------------- the fleet's

    async def check(self) -> None:
        """Fail unless the database holds a journal (see [`Journal`][tether.journal.Journal])."""
        ((found,),) = await self._sql("SELECT to_regclass('tether_entries') IS NOT NULL")
        if not found:
            raise JournalError(f"no tether journal in {self._where()} (no tether_entries table)")

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished (see [`Journal`][tether.journal.Journal])."""
        # The lease's end on this host's clock (the server's "now() + what is left"); the
        # process read through to_jsonb: NULL, not an error, in a table from before it.
        columns = ", ".join(f"e.{c}" for c in _COLUMNS.split(", "))
        rows = await self._sql(
            f"SELECT {columns}, coalesce(o.expires_at > now(), false), "
            "extract(epoch from o.expires_at - now()), to_jsonb(o) ->> 'process' "
            "FROM tether_entries e LEFT JOIN tether_owners o ON o.instance = e.owner "
            "ORDER BY e.created_at, e.intent",
            slow=True,
        )
        now = time.time()
        return [
            _entry(
                row[:-3], bool(row[-3]), None if row[-2] is None else now + float(row[-2]), row[-1]
            )
            for row in rows
        ]

    async def claim(
        self, intents: Sequence[str], *, ttl: float, include_live: bool = False
    ) -> list[JournalEntry]:
        """Claim reapable entries with ``SKIP LOCKED`` (see [`Journal`][tether.journal.Journal])."""
        rows = await self._sql(
            "UPDATE tether_entries t SET claimed_by = 'reaper', "
            "claim_expires = now() + make_interval(secs => %s) "
            "FROM (SELECT intent FROM tether_entries e WHERE intent = ANY(%s) "
            f"AND (claimed_by IS NULL OR claim_expires < now()) AND (%s OR NOT {_ALIVE}) "
            "FOR UPDATE SKIP LOCKED) c WHERE t.intent = c.intent "
            + "RETURNING "
            + ", ".join(f"t.{column}" for column in _COLUMNS.split(", ")),
            ttl,
            list(intents),
            include_live,
            slow=True,
        )
        return sorted((_entry(row, False) for row in rows), key=lambda e: e.created_at)

    async def release(self, intent: str) -> None:
        """Drop a claim (see [`Journal`][tether.journal.Journal])."""
        await self._sql("UPDATE tether_entries SET claimed_by = NULL WHERE intent = %s", intent)

    async def request(self, key: str) -> int:
        """Notify every listener (see [`Journal`][tether.journal.Journal])."""
        await self._sql("SELECT pg_notify(%s, %s)", _CHANNEL, key)
        ((listeners,),) = await self._sql(
            "SELECT count(*) FROM tether_owners WHERE expires_at > now()"
        )
        return int(listeners)

    # ------------------------------------------------------------ lease, listener

    async def _renew(self, intents: Sequence[str]) -> list[str]:
        owner = self.owner
        wanted = list(intents)

        def work(conn: Any) -> list[str]:
            conn.execute(
                "INSERT INTO tether_owners (instance, host, pid, expires_at, process) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s), %s) "
                "ON CONFLICT (instance) DO UPDATE SET expires_at = excluded.expires_at",
                (owner.instance, owner.host, owner.pid, self.lease, owner.process),
            )
            if not wanted:
                return []
            rows = conn.execute(
                "SELECT i FROM unnest(%s::text[]) AS i "
                "WHERE NOT EXISTS (SELECT 1 FROM tether_entries WHERE intent = i)",
                (wanted,),
            ).fetchall()
            return [str(intent) for (intent,) in rows]

        return await self._call(work, create=True)

    async def _restore(self, entries: Sequence[JournalEntry]) -> None:
        def work(conn: Any) -> None:
            held = self._holding()  # an entry finished meanwhile is not written back
            rows = [_values(held[e.intent]) for e in entries if e.intent in held]
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)

        await self._call(work, create=True)

    async def _drop_owner(self) -> None:
        await self._sql("DELETE FROM tether_owners WHERE instance = %s", self.owner.instance)

    async def _listen(self, post: Callable[[str | None], None]) -> None:
        interrupt = Interrupt()

        def listen() -> None:
            try:
                conn = self._connect()
            except Exception as exc:
                raise self._error(exc) from None
            interrupt.arm(partial(_shut_down, conn.pgconn.socket))
            try:
                conn.execute(f"LISTEN {_CHANNEL}")
                anyio.from_thread.run_sync(post, None)
                while True:
                    anyio.from_thread.check_cancelled()
                    for notify in conn.notifies(timeout=_POLL):
                        anyio.from_thread.run_sync(post, notify.payload)
            except Exception as exc:
                raise self._error(exc) from None
            finally:
                interrupt.disarm()
                conn.close()

        # The listener holds its thread for the scope's lifetime: not one of the shared pool's.
        # Cancelled, its socket is shut down: it ends, and closes its connection, at once.
        await in_thread(
            listen, limiter=anyio.CapacityLimiter(1), interrupt=interrupt, settle=self.timeout
        )
