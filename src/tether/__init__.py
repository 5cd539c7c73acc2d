"""tether: tie OpenAI Responses streams to structured-concurrency cancel scopes.

When a scope is cancelled, a deadline passes, your code raises or breaks, or a race is
decided, every live response inside it is stopped **on the server**: the HTTP stream is
closed, ``responses.cancel`` is awaited under a shield within a bounded grace, and the
cancellation goes on. Nothing orphaned, nothing hangs, nothing swallowed.
"""

from __future__ import annotations

import inspect

from . import sync as sync
from ._agent import AgentResult as AgentResult
from ._agent import AgentTurn as AgentTurn
from ._agent import StopReason as StopReason
from ._agent import run_agent as run_agent
from ._errors import AttemptRejected as AttemptRejected
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import RaceFailed as RaceFailed
from ._errors import ResponseNotCompleted as ResponseNotCompleted
from ._errors import StallError as StallError
from ._errors import TetherError as TetherError
from ._fleet import CancelRequestReport as CancelRequestReport
from ._fleet import ReapReport as ReapReport
from ._fleet import reap as reap
from ._fleet import request_cancel as request_cancel
from ._guard import GuardedStream as GuardedStream
from ._guard import guarded_stream as guarded_stream
from ._guard import resume as resume
from ._hedge import Adaptive as Adaptive
from ._hedge import HedgeBudget as HedgeBudget
from ._hedge import Trigger as Trigger
from ._hedge import adaptive as adaptive
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._journal import JournalError as JournalError
from ._journal import Owner as Owner
from ._journal import default_journal_path as default_journal_path
from ._journal import open_journal as open_journal
from ._journal_postgres import PostgresJournal as PostgresJournal
from ._journal_redis import RedisJournal as RedisJournal
from ._journal_sqlite import SqliteJournal as SqliteJournal
from ._outcome import Attempt as Attempt
from ._outcome import AttemptState as AttemptState
from ._outcome import CancelReceipt as CancelReceipt
from ._outcome import DetachedResponse as DetachedResponse
from ._outcome import EndReason as EndReason
from ._outcome import Outcome as Outcome
from ._outcome import RaceResult as RaceResult
from ._race import WinCondition as WinCondition
from ._race import first_completed as first_completed
from ._race import first_token as first_token
from ._race import race as race
from ._race_stream import RaceStream as RaceStream
from ._race_stream import race_stream as race_stream
from ._scope import Scope as Scope
from ._scope import open_scope as open_scope
from ._tools import AgentContext as AgentContext
from ._tools import Tool as Tool
from ._tools import ToolCall as ToolCall
from ._tools import tool as tool

__all__ = [
    "Adaptive",
    "AgentContext",
    "AgentResult",
    "AgentTurn",
    "Attempt",
    "AttemptRejected",
    "AttemptState",
    "CancelReceipt",
    "CancelRequestReport",
    "DeadlineExceeded",
    "DetachedResponse",
    "EndReason",
    "GuardedStream",
    "HedgeBudget",
    "Journal",
    "JournalEntry",
    "JournalError",
    "Outcome",
    "Owner",
    "PostgresJournal",
    "RaceFailed",
    "RaceResult",
    "RaceStream",
    "ReapReport",
    "RedisJournal",
    "ResponseNotCompleted",
    "Scope",
    "SqliteJournal",
    "StallError",
    "StopReason",
    "TetherError",
    "Tool",
    "ToolCall",
    "Trigger",
    "WinCondition",
    "adaptive",
    "default_journal_path",
    "first_completed",
    "first_token",
    "guarded_stream",
    "open_journal",
    "open_scope",
    "race",
    "race_stream",
    "reap",
    "request_cancel",
    "resume",
    "run_agent",
    "tool",
]


def _claim_public_names() -> None:
    """Public objects say they come from `tether`, not from the private module they live in."""
    for name in __all__:
        obj: object = globals()[name]
        if isinstance(obj, type) or inspect.isfunction(obj):
            obj.__module__ = __name__


_claim_public_names()
