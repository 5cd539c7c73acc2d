"""tether: tie OpenAI Responses streams to structured-concurrency cancel scopes.

When a scope is cancelled, a deadline passes, your code raises or breaks, or a race is
decided, every live response inside it is stopped **on the server**: the HTTP stream is
closed, ``responses.cancel`` is awaited under a shield within a bounded grace, and the
cancellation goes on. Nothing orphaned, nothing hangs, nothing swallowed.

The entry points are here; their records live in submodules: ``tether.races``,
``tether.agents``, ``tether.journal``, ``tether.observe`` (progress events),
``tether.sync`` (for ``openai.OpenAI``), ``tether.testing`` (the emulator) and
``tether.otel`` (OpenTelemetry). What a record's ``reason``, ``kind`` or ``state`` can say
is a literal alias on the record: ``StreamOutcome.Reason``, ``StallError.Kind``.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from . import agents as agents
from . import journal as journal
from . import observe as observe
from . import races as races
from ._agent import run_agent as run_agent
from ._errors import AttemptRejected as AttemptRejected
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import RaceFailed as RaceFailed
from ._errors import ResponseNotCompleted as ResponseNotCompleted
from ._errors import StallError as StallError
from ._errors import TetherError as TetherError
from ._fleet import reap as reap
from ._fleet import request_cancel as request_cancel
from ._hedging import adaptive as adaptive
from ._journal import JournalError as JournalError
from ._journal import open_journal as open_journal
from ._outcome import CancelReceipt as CancelReceipt
from ._outcome import DetachedResponse as DetachedResponse
from ._outcome import StreamOutcome as StreamOutcome
from ._public import claim as _claim
from ._race import race as race
from ._race_stream import race_stream as race_stream
from ._scope import Scope as Scope
from ._scope import open_scope as open_scope
from ._stream import GuardedStream as GuardedStream
from ._stream import guarded_stream as guarded_stream
from ._stream import resume as resume
from ._tools import agent_tool as agent_tool

try:
    __version__: str = _metadata.version("tether")
    """The installed distribution's version (``importlib.metadata``), e.g. ``"0.1.0"``."""
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AttemptRejected",
    "CancelReceipt",
    "DeadlineExceeded",
    "DetachedResponse",
    "GuardedStream",
    "JournalError",
    "RaceFailed",
    "ResponseNotCompleted",
    "Scope",
    "StallError",
    "StreamOutcome",
    "TetherError",
    "adaptive",
    "agent_tool",
    "guarded_stream",
    "open_journal",
    "open_scope",
    "race",
    "race_stream",
    "reap",
    "request_cancel",
    "resume",
    "run_agent",
]


_claim(__name__, globals(), __all__)
