"""Journals: where guarded streams record their live background responses, for a fleet.

[`tether.open_journal`][tether.open_journal], [`tether.reap`][tether.reap] and
[`tether.request_cancel`][tether.request_cancel] are the entry points; this module holds
the stores, the Protocol a store of your own implements, and the records they return.

Example:
    ```python
    from tether.journal import SqliteJournal

    journal = SqliteJournal("/var/lib/myapp/tether.sqlite3")
    for entry in await journal.entries():
        print(entry.key, entry.response_id, entry.owner)
    ```
"""

from __future__ import annotations

from ._fleet import CancelRequestReport as CancelRequestReport
from ._fleet import ReapReport as ReapReport
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._journal import Owner as Owner
from ._journal_postgres import PostgresJournal as PostgresJournal
from ._journal_redis import RedisJournal as RedisJournal
from ._journal_sqlite import SqliteJournal as SqliteJournal
from ._public import claim as _claim

__all__ = [
    "CancelRequestReport",
    "Journal",
    "JournalEntry",
    "Owner",
    "PostgresJournal",
    "ReapReport",
    "RedisJournal",
    "SqliteJournal",
]


_claim(__name__, globals(), __all__)
