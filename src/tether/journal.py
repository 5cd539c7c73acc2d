"""Journals: where guarded streams record their live background responses, for a fleet.

[`tether.open_journal`][tether.open_journal], [`tether.reap`][tether.reap] and
[`tether.request_cancel`][tether.request_cancel] are the entry points; this module holds
the Protocol a store implements (the built-in ones, SQLite, Redis and PostgreSQL, are opened
by [`open_journal`][tether.open_journal]; a store of your own implements it too), and the
records journals and the fleet tools return.

Example:
    ```python
    journal = tether.open_journal("/var/lib/myapp/tether.sqlite3")
    for entry in await journal.entries():
        print(entry.key, entry.response_id, entry.owner)
    ```
"""

from __future__ import annotations

from ._fleet import CancelRequestReport as CancelRequestReport
from ._fleet import ReapReport as ReapReport
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._public import claim as _claim

__all__ = [
    "CancelRequestReport",
    "Journal",
    "JournalEntry",
    "ReapReport",
]


_claim(__name__, globals(), __all__)
