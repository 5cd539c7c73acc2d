"""tether: tie OpenAI Responses streams to structured-concurrency cancel scopes.

When a scope is cancelled, a deadline passes, your code raises or breaks, or a race is
decided, every live response inside it is stopped **on the server**: the HTTP stream is
closed, ``responses.cancel`` is awaited under a shield within a bounded grace, and the
cancellation goes on. Nothing orphaned, nothing hangs, nothing swallowed.
"""

from __future__ import annotations

import inspect
from importlib import metadata as _metadata

from . import races as races
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
from ._hedging import AdaptiveStagger as Adaptive  # moving to tether.races.AdaptiveStagger
from ._hedging import HedgeBudget as HedgeBudget
from ._hedging import Trigger as Trigger
from ._hedging import adaptive as adaptive
from ._journal import Journal as Journal
from ._journal import JournalEntry as JournalEntry
from ._journal import ReapReport as ReapReport
from ._journal import SqliteJournal as SqliteJournal
from ._journal import default_journal_path as default_journal_path
from ._journal import reap as reap
from ._outcome import CancelReceipt as CancelReceipt
from ._outcome import DetachedResponse as DetachedResponse
from ._outcome import EndReason as EndReason
from ._outcome import Outcome as Outcome
from ._race import race as race
from ._race_records import AttemptState as AttemptState
from ._race_records import RaceAttempt as Attempt  # moving to tether.races.RaceAttempt
from ._race_records import RaceResult as RaceResult
from ._race_records import WinCondition as WinCondition
from ._race_records import first_completed as first_completed
from ._race_records import first_token as first_token
from ._race_stream import RaceStream as RaceStream
from ._race_stream import race_stream as race_stream
from ._scope import Scope as Scope
from ._scope import open_scope as open_scope
from ._stream import GuardedStream as GuardedStream
from ._stream import guarded_stream as guarded_stream
from ._stream import resume as resume
from ._tools import AgentContext as AgentContext
from ._tools import Tool as Tool
from ._tools import ToolCall as ToolCall
from ._tools import tool as tool

try:
    __version__: str = _metadata.version("tether")
    """The installed distribution's version (``importlib.metadata``), e.g. ``"0.1.0"``."""
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Adaptive",
    "AgentContext",
    "AgentResult",
    "AgentTurn",
    "Attempt",
    "AttemptRejected",
    "AttemptState",
    "CancelReceipt",
    "DeadlineExceeded",
    "DetachedResponse",
    "EndReason",
    "GuardedStream",
    "HedgeBudget",
    "Journal",
    "JournalEntry",
    "Outcome",
    "RaceFailed",
    "RaceResult",
    "RaceStream",
    "ReapReport",
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
    "open_scope",
    "race",
    "race_stream",
    "reap",
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
