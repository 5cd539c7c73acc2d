"""The embedded journal: one SQLite file, for the processes of one machine (no server).

Every call runs in a worker thread (``anyio.to_thread``) on a short-lived connection of its
own: nothing to close, safe across ``fork``, and several processes can share the file (WAL
mode). A lock held by another process is waited for at most ``timeout`` seconds (1 s by
default), then the call fails with a [`JournalError`][tether.JournalError]; on a stop path
the caller waits at most what is left of grace, and the thread is abandoned (``_journal_bound``).

Leases are wall-clock times (``time.time()``: one machine, one clock). Cancel requests are
rows of a ``cancels`` table that each attached owner polls every 0.2 s (one indexed ``SELECT``
on a fresh connection, about 0.1 ms): SQLite has no notifications across processes, and a
fifth of a second is well within "about a second".

Only writes create the file (with its folder, mode 0600); reading, claiming and ``check``
never do, so ``tether reap --journal <a typo>`` is an error, not an empty journal.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, final

import anyio

from ._journal import DEFAULT_LEASE, JournalEntry, JournalError, default_journal_path
from ._journal_bound import in_thread
from ._journal_lease import LeasedJournal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


__all__ = ["SqliteJournal"]

_VERSION = 2  # PRAGMA user_version: marks a file as a tether journal (and its layout)
_POLL = 0.2  # seconds between two reads of the cancel requests
_KEEP_REQUESTS = 60.0  # seconds a cancel request stays in the table
_CHUNK = 500  # intents per statement (SQLite's limit on variables is 999 on old builds)
_COLUMNS = "intent, key, response_id, model, base_url, host, pid, owner, created_at"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS entries (
    intent TEXT PRIMARY KEY, key TEXT, response_id TEXT, model TEXT, base_url TEXT NOT NULL,
    host TEXT NOT NULL, pid INTEGER NOT NULL, owner TEXT NOT NULL, created_at REAL NOT NULL,
    claimed_by TEXT, claim_expires REAL
);
CREATE INDEX IF NOT EXISTS entries_key ON entries (key);
CREATE TABLE IF NOT EXISTS owners (
    instance TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, expires_at REAL NOT NULL,
    process TEXT
);
CREATE TABLE IF NOT EXISTS cancels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, requested_at REAL NOT NULL
);
PRAGMA user_version = {_VERSION};
"""
_ALIVE = "EXISTS (SELECT 1 FROM owners o WHERE o.instance = e.owner AND o.expires_at > ?)"

_INSERT = f"INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

Row = tuple[object, ...]


def _values(entry: JournalEntry) -> tuple[object, ...]:
    return (
        *(entry.intent, entry.key, entry.response_id, entry.model, entry.base_url),
        *(entry.host, entry.pid, entry.owner, entry.created_at),
    )


def _add_process_column(db: sqlite3.Connection) -> None:
    """A journal written before owners recorded their process: add the column (once)."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(owners)").fetchall()}
    if columns and "process" not in columns:
        db.execute("ALTER TABLE owners ADD COLUMN process TEXT")


def _entry(
    row: Row, alive: bool, lease_until: object = None, process: object = None
) -> JournalEntry:
    intent, key, rid, model, base_url, host, pid, owner, created = row
    return JournalEntry(
        intent=str(intent),
        key=None if key is None else str(key),
        response_id=None if rid is None else str(rid),
        model=None if model is None else str(model),
        base_url=str(base_url),
        host=str(host),
        pid=int(str(pid)),
        owner=str(owner),
        created_at=float(str(created)),
        alive=alive,
        lease_until=float(str(lease_until)) if alive and lease_until is not None else None,
        owner_process=None if process is None else str(process),
    )


@final
class SqliteJournal(LeasedJournal):
    """The built-in journal: one SQLite file (WAL mode, created with mode 0600).

    Args:
        path: The database file (created with its folder on the first write). Default:
            the per-user journal, `$XDG_STATE_HOME/tether/journal.sqlite3` (`~/.local/state`).
        lease: Seconds an owner's entries stay untouchable after its last renewal.
        timeout: Seconds a call waits for another process's lock before it fails.

    Example:
        ```python
        journal = tether.open_journal("/var/lib/myapp/tether.sqlite3", lease=10.0)
        async with tether.open_scope(client, journal=journal) as scope: ...
        ```
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lease: float = DEFAULT_LEASE,
        timeout: float = 1.0,
    ) -> None:
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str, an os.PathLike or None, got {path!r}")
        super().__init__(lease=lease, timeout=timeout)
        self.path: Path = Path(path).expanduser() if path is not None else default_journal_path()
        """The database file."""
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self.path)!r})"

    def _where(self) -> str:
        return str(self.path)

    # ----------------------------------------------------------------- plumbing

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            with self._lock:
                if not self._ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    # Created 0600 before SQLite opens it: it names what you run, and where.
                    os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
                    db = sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout)
                    try:
                        db.execute("PRAGMA journal_mode=WAL")
                        db.executescript(_SCHEMA)
                        _add_process_column(db)
                    finally:
                        db.close()
                    self._ready = True
            return sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout)
        if not self.path.is_file():
            raise JournalError(f"no journal at {self.path} (nothing was ever recorded there)")
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.timeout)
        try:
            (version,) = db.execute("PRAGMA user_version").fetchone()
        except BaseException:
            db.close()
            raise
        if version != _VERSION:
            db.close()
            raise JournalError(f"{self.path} is not a tether journal (user_version {version})")
        if not self._ready:
            try:
                _add_process_column(db)
            except BaseException:
                db.close()
                raise
        return db

    def _run(self, create: bool, work: Callable[[sqlite3.Connection], list[Row]]) -> list[Row]:
        try:
            db = self._connect(create)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a tether journal: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"the journal {self.path} failed: {exc}") from exc
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            return work(db)
        except sqlite3.Error as exc:
            raise JournalError(f"the journal {self.path} failed: {exc}") from exc
        finally:
            db.close()

    async def _call(
        self, work: Callable[[sqlite3.Connection], list[Row]], *, create: bool
    ) -> list[Row]:
        return await in_thread(self._run, create, work)

    async def _sql(self, sql: str, *params: object, create: bool = False) -> list[Row]:
        return await self._call(lambda db: db.execute(sql, params).fetchall(), create=create)

    # ------------------------------------------------------------- the stream's

    async def intend(
        self, intent: str, *, key: str | None, model: str | None, base_url: str
    ) -> None:
        """Record an intent (see [`Journal`][tether.journal.Journal])."""
        entry = self._entry(intent, key=key, model=model, base_url=base_url)
        await self._sql(f"INSERT OR REPLACE {_INSERT}", *_values(entry), create=True)
        self._hold(entry)

    async def started(self, intent: str, response_id: str) -> None:
        """Record a response id (see [`Journal`][tether.journal.Journal])."""
        self._hold_started(intent, response_id)
        await self._sql(
            "UPDATE entries SET response_id = ? WHERE intent = ?", response_id, intent, create=True
        )

    async def finished(self, intent: str) -> None:
        """Forget an entry (see [`Journal`][tether.journal.Journal])."""
        self._unhold(intent)
        await self._sql("DELETE FROM entries WHERE intent = ?", intent, create=True)

    # --------------------------------------------------------------- the fleet's

    async def check(self) -> None:
        """Fail unless the file is a journal (see [`Journal`][tether.journal.Journal])."""
        await self._sql("SELECT 1")

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished (see [`Journal`][tether.journal.Journal])."""
        if not self.path.exists():
            return []
        columns = ", ".join(f"e.{c}" for c in _COLUMNS.split(", "))
        rows = await self._sql(
            f"SELECT {columns}, o.expires_at > ?, o.expires_at, o.process FROM entries e "
            "LEFT JOIN owners o ON o.instance = e.owner ORDER BY e.created_at, e.rowid",
            time.time(),
        )
        return [_entry(row[:-3], bool(row[-3]), row[-2], row[-1]) for row in rows]

    async def claim(
        self, intents: Sequence[str], *, ttl: float, include_live: bool = False
    ) -> list[JournalEntry]:
        """Claim reapable entries (see [`Journal`][tether.journal.Journal])."""
        token = os.urandom(8).hex()
        wanted = list(intents)

        def work(db: sqlite3.Connection) -> list[Row]:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    db.execute(
                        f"UPDATE entries AS e SET claimed_by = ?, claim_expires = ? "
                        f"WHERE intent IN ({marks}) "
                        f"AND (claimed_by IS NULL OR claim_expires < ?) AND (? OR NOT {_ALIVE})",
                        (token, now + ttl, *chunk, now, include_live, now),
                    )
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM entries WHERE claimed_by = ? ORDER BY created_at",
                    (token,),
                ).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return rows

        return [_entry(row, alive=False) for row in await self._call(work, create=False)]

    async def release(self, intent: str) -> None:
        """Drop a claim (see [`Journal`][tether.journal.Journal])."""
        await self._sql("UPDATE entries SET claimed_by = NULL WHERE intent = ?", intent)

    async def request(self, key: str) -> int:
        """Record a cancel request; owners poll for it (see [`Journal`][tether.journal.Journal])."""
        now = time.time()

        def work(db: sqlite3.Connection) -> list[Row]:
            db.execute("DELETE FROM cancels WHERE requested_at < ?", (now - _KEEP_REQUESTS,))
            db.execute("INSERT INTO cancels (key, requested_at) VALUES (?, ?)", (key, now))
            return db.execute("SELECT count(*) FROM owners WHERE expires_at > ?", (now,)).fetchall()

        ((listeners,),) = await self._call(work, create=False)
        return int(str(listeners))

    # ------------------------------------------------------------ lease, listener

    async def _renew(self, intents: Sequence[str]) -> list[str]:
        owner = self.owner
        wanted = list(intents)

        def work(db: sqlite3.Connection) -> list[Row]:
            db.execute(
                "INSERT OR REPLACE INTO owners (instance, host, pid, expires_at, process) "
                "VALUES (?, ?, ?, ?, ?)",
                (owner.instance, owner.host, owner.pid, time.time() + self.lease, owner.process),
            )
            found: list[Row] = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT intent FROM entries WHERE intent IN ({marks})"
                found += db.execute(sql, chunk).fetchall()
            return found

        found = {str(intent) for (intent,) in await self._call(work, create=True)}
        return [intent for intent in wanted if intent not in found]

    async def _restore(self, entries: Sequence[JournalEntry]) -> None:
        def work(db: sqlite3.Connection) -> list[Row]:
            db.execute("BEGIN IMMEDIATE")
            try:
                held = self._holding()  # under the write lock: a removal waits, or went first
                rows = [_values(held[e.intent]) for e in entries if e.intent in held]
                db.executemany(f"INSERT OR IGNORE {_INSERT}", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return []

        await self._call(work, create=True)

    async def _drop_owner(self) -> None:
        await self._sql("DELETE FROM owners WHERE instance = ?", self.owner.instance, create=True)

    async def _listen(self, post: Callable[[str | None], None]) -> None:
        ((last,),) = await self._sql("SELECT coalesce(max(id), 0) FROM cancels", create=True)
        post(None)
        while True:
            await anyio.sleep(_POLL)
            rows = await self._sql("SELECT id, key FROM cancels WHERE id > ? ORDER BY id", last)
            for request_id, key in rows:
                last = request_id
                post(str(key))
