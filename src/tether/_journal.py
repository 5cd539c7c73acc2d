"""A crash-safe journal of live background responses, and the reaper that cancels leftovers.

A background response outlives the process that started it: after a SIGKILL (the OOM killer,
a deploy, a crash) nobody cancels it. With a journal, every guarded background stream records
an *intent* before its request is sent, its response id once known, and removes the entry
once the response is known to have stopped. Whatever is left after a crash is what
[`reap`][tether.reap] (or ``tether reap``) cancels.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio
import attrs

from ._cancel import cancel_on_server
from ._compat import check_async_client
from ._validate import check_positive

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ._outcome import CancelReceipt

__all__ = [
    "Journal",
    "JournalEntry",
    "ReapReport",
    "SqliteJournal",
    "default_journal_path",
    "open_journal",
    "reap",
]


@attrs.frozen(kw_only=True)
class JournalEntry:
    """One response a process started and has not yet seen stop.

    Example:
        ```python
        for entry in await journal.entries():
            print(entry.response_id or "(no id yet)", entry.model, entry.pid)
        ```
    """

    intent: str
    """A random id, recorded before the request was sent."""
    response_id: str | None
    """The response's id, once ``response.created`` arrived (``None`` if the process died first)."""
    model: str | None
    """The model asked for."""
    base_url: str
    """The API the response lives on (never the API key)."""
    pid: int
    """The process that started it."""
    created_at: float
    """Wall-clock time (``time.time()``) of the intent."""


@runtime_checkable
class Journal(Protocol):
    """Where guarded streams record their live background responses.

    [`SqliteJournal`][tether.SqliteJournal] is the built-in store (one machine). A shared store
    for a fleet of workers (Redis, PostgreSQL) implements these four coroutines; each must be
    durable when it returns and must not block the event loop.

    Example:
        ```python
        class MyJournal:
            async def intend(self, intent, *, model, base_url): ...
            async def started(self, intent, response_id): ...
            async def finished(self, intent): ...
            async def entries(self): ...
        ```
    """

    async def intend(self, intent: str, *, model: str | None, base_url: str) -> None:
        """Record that a request for a background response is about to be sent."""
        ...

    async def started(self, intent: str, response_id: str) -> None:
        """Record the id of the response *intent* started."""
        ...

    async def finished(self, intent: str) -> None:
        """Forget *intent*: its response is known to have stopped (or was never started)."""
        ...

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished, oldest first."""
        ...


def default_journal_path() -> Path:
    """The per-user journal: ``$XDG_STATE_HOME/tether/journal.sqlite3`` (``~/.local/state``).

    Example:
        ```python
        print(tether.default_journal_path())  # /home/me/.local/state/tether/journal.sqlite3
        ```
    """
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tether" / "journal.sqlite3"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    intent      TEXT PRIMARY KEY,
    response_id TEXT,
    model       TEXT,
    base_url    TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    created_at  REAL NOT NULL
)
"""


@final
class SqliteJournal:
    """The built-in journal: one SQLite file (WAL mode, created with mode 0600).

    Writes run in a worker thread (``anyio.to_thread``), so the event loop never blocks on
    the disk. Several processes may share one file.

    Args:
        path: The database file (created with its folder if missing). Default:
            [`default_journal_path`][tether.default_journal_path].

    Example:
        ```python
        journal = tether.SqliteJournal("/var/lib/myapp/tether.sqlite3")
        async with tether.open_scope(client, journal=journal) as scope: ...
        ```
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_journal_path()
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self.path)!r})"

    def _run(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        # One short-lived connection per operation: nothing to close, safe across fork, and
        # several processes can share the file (WAL).
        with self._lock:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Create the file 0600 before SQLite opens it: it names what you run, and where.
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            try:
                if not self._ready:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(_SCHEMA)
                    self._ready = True
                db.execute("PRAGMA synchronous=NORMAL")
                return db.execute(sql, params).fetchall()
            finally:
                db.close()

    async def _execute(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        return await anyio.to_thread.run_sync(self._run, sql, params)

    async def intend(self, intent: str, *, model: str | None, base_url: str) -> None:
        """Record an intent (see [`Journal`][tether.Journal])."""
        await self._execute(
            "INSERT OR REPLACE INTO responses VALUES (?, NULL, ?, ?, ?, ?)",
            intent,
            model,
            base_url,
            os.getpid(),
            time.time(),
        )

    async def started(self, intent: str, response_id: str) -> None:
        """Record a response id (see [`Journal`][tether.Journal])."""
        await self._execute(
            "UPDATE responses SET response_id = ? WHERE intent = ?", response_id, intent
        )

    async def finished(self, intent: str) -> None:
        """Forget an entry (see [`Journal`][tether.Journal])."""
        await self._execute("DELETE FROM responses WHERE intent = ?", intent)

    async def entries(self) -> list[JournalEntry]:
        """Every entry not yet finished (see [`Journal`][tether.Journal])."""
        rows = await self._execute(
            "SELECT intent, response_id, model, base_url, pid, created_at FROM responses "
            "ORDER BY created_at, rowid"
        )
        return [
            JournalEntry(
                intent=str(intent),
                response_id=None if rid is None else str(rid),
                model=None if model is None else str(model),
                base_url=str(base_url),
                pid=int(str(pid)),
                created_at=float(str(created)),
            )
            for intent, rid, model, base_url, pid, created in rows
        ]


def open_journal(journal: Journal | str | os.PathLike[str] | None) -> Journal | None:
    """``None``, a [`Journal`][tether.Journal], or a path for a [`SqliteJournal`][tether.SqliteJournal]."""
    if journal is None or isinstance(journal, Journal):
        return journal
    if isinstance(journal, (str, os.PathLike)):
        return SqliteJournal(journal)
    raise TypeError(f"journal must be a tether.Journal, a path or None, got {journal!r}")


@attrs.frozen(kw_only=True)
class ReapReport:
    """What [`reap`][tether.reap] found in a journal, and what it did.

    Example:
        ```python
        report = await tether.reap(client, "journal.sqlite3")
        print(len(report.cancelled), "cancelled;", len(report.unknown), "never got an id")
        ```
    """

    found: tuple[JournalEntry, ...]
    """Every entry the journal held."""
    cancelled: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries whose response is now known stopped (cancelled, or finished before), removed."""
    failed: tuple[tuple[JournalEntry, CancelReceipt], ...]
    """Entries whose cancel could not be confirmed within grace: kept, for the next reap."""
    unknown: tuple[JournalEntry, ...]
    """Intents whose process died before ``response.created``: no id to cancel; removed."""
    skipped: tuple[JournalEntry, ...]
    """Entries of another API (``base_url``) than the client's, or of a process still alive."""


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


async def reap(
    client: AsyncOpenAI,
    journal: Journal | str | os.PathLike[str] | None = None,
    *,
    grace: float = 5.0,
    include_live: bool = False,
) -> ReapReport:
    """Cancel every response a crashed process left in the journal.

    Entries of processes still running are skipped (their owners will cancel them) unless
    *include_live*; so are entries of another API than *client*'s. Cancels run concurrently,
    each through the same shielded path as a guarded stream's. Idempotent: a response
    already stopped is just removed.

    Args:
        client: An ``openai.AsyncOpenAI`` for the API the responses live on.
        journal: A [`Journal`][tether.Journal] or a path (default: the per-user journal).
        grace: Seconds each cancel may take, retries included.
        include_live: Also cancel the entries of processes that are still alive.

    Returns:
        A [`ReapReport`][tether.ReapReport].

    Example:
        ```python
        report = await tether.reap(openai.AsyncOpenAI(), "journal.sqlite3")
        ```

    Added in version 0.1.
    """
    client = check_async_client(client)
    grace = check_positive("grace", grace)
    store = open_journal(journal) or SqliteJournal()
    entries = await store.entries()
    base_url = str(client.base_url)
    targets: list[JournalEntry] = []
    unknown: list[JournalEntry] = []
    skipped: list[JournalEntry] = []
    for entry in entries:
        if entry.base_url != base_url or (not include_live and _alive(entry.pid)):
            skipped.append(entry)
        elif entry.response_id is None:
            unknown.append(entry)
        else:
            targets.append(entry)
    receipts: dict[str, CancelReceipt] = {}

    async def cancel(entry: JournalEntry) -> None:
        assert entry.response_id is not None
        receipts[entry.intent] = await cancel_on_server(client, entry.response_id, grace=grace)

    async with anyio.create_task_group() as tg:
        for entry in targets:
            tg.start_soon(cancel, entry)
    cancelled = [(e, receipts[e.intent]) for e in targets if receipts[e.intent].stopped]
    failed = [(e, receipts[e.intent]) for e in targets if not receipts[e.intent].stopped]
    for entry in [e for e, _ in cancelled] + unknown:
        await store.finished(entry.intent)
    return ReapReport(
        found=tuple(entries),
        cancelled=tuple(cancelled),
        failed=tuple(failed),
        unknown=tuple(unknown),
        skipped=tuple(skipped),
    )
