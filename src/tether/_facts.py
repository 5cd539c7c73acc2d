"""What a guard knows of its response: the facts its outcome and its properties are made of.

The guard is a linear chain of classes, one module each: `GuardFacts` (this one) <-
``StreamReader`` (``_reading.py``, the read path) <- ``StopSteps`` (``_stopping.py``, the
server-side half of a stop) <- ``ResponseGuard`` (``_protocol.py``, the protocol: open,
stop, finish). Each of those writes some of the facts below; they are declared here, once,
with the read-only properties the rest of the package reads them through (races, the scope,
the facades, ``_finish``'s ``StreamOutcome``), so that no module above has to hold a fact
for the sake of another. Also here: the guard's `State` (``_state``, ``_reached``) and
``_to``, the one place it changes.

Only data and its accessors: nothing here reads, sends or waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from . import observe
from ._lifecycle import State, check_transition
from ._outcome import StreamOutcome

if TYPE_CHECKING:
    from openai.types.responses import Response

    from ._errors import StallKind
    from ._outcome import CancelReceipt, DetachedResponse, EndReason

__all__ = ["GuardFacts"]


class GuardFacts:
    """What one guard knows of its response, and its lifecycle state (internal)."""

    __slots__ = (
        "_background",
        "_cleanup_error",
        "_deltas",
        "_events",
        "_final",
        "_finished",
        "_intent",
        "_last_seq",
        "_model",
        "_outcome",
        "_reached",
        "_reason",
        "_receipt",
        "_response_id",
        "_resumes",
        "_stall",
        "_started",
        "_state",
        "_status",
        "_yielded_seq",
        "node",
    )

    def __init__(
        self, *, background: bool, model: str | None, handle: DetachedResponse | None
    ) -> None:
        # what was asked for, and what the server said about it
        self._background = background
        self._model = model
        self._response_id: str | None = None if handle is None else handle.response_id
        self._status: str | None = None
        self._final: Response | None = None
        self._finished: str | None = None  # the status of a final lifecycle event
        # how far it got (see _lifecycle.py)
        self._state = State.NEW  # changed only by _to
        self._reached = State.NEW  # how far the response got: a stop does not erase it
        self._started = 0.0
        self._events = 0
        self._deltas = 0
        self._last_seq: int | None = None if handle is None else handle.last_sequence_number
        self._yielded_seq: int | None = self._last_seq  # what detach() resumes after
        self._resumes = 0
        # how it ended
        self._stall: StallKind | None = None
        self._reason: EndReason | None = None
        self._receipt: CancelReceipt | None = None
        self._cleanup_error: str | None = None
        self._intent: str | None = None  # this stream's journal entry, if the scope has one
        self._outcome: StreamOutcome | None = None
        self.node: int = observe.new_id()
        """This stream's id in progress events."""

    def _to(self, new: State) -> None:
        """Move to *new*: the one place the state changes (``_lifecycle.TRANSITIONS``)."""
        check_transition(self._state, new)
        self._state = new
        if new < State.STOPPING:
            self._reached = new

    # -------------------------------------------------------------- identity

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``async with`` body runs."""
        return self._response_id

    @property
    def model(self) -> str | None:
        """The model asked for (or reported by the server)."""
        return self._model

    @property
    def background(self) -> bool:
        """Whether the response runs in background mode (cancellable on the server)."""
        return self._background

    # -------------------------------------------------------------- progress

    @property
    def state(self) -> State:
        """Where the guard is in its lifecycle (see ``_lifecycle.py``)."""
        return self._state

    @property
    def admitted(self) -> bool:
        """Whether it is past the ``max_concurrency`` queue (its request may be sent)."""
        return self._reached >= State.ADMITTED

    @property
    def request_sent(self) -> bool:
        """Whether its request started leaving (a stream aborted before sent nothing)."""
        return self._reached >= State.SENDING

    @property
    def exhausted(self) -> bool:
        """Whether the stream's events were read to their end."""
        return self._reached is State.EXHAUSTED

    @property
    def finished(self) -> bool:
        """Whether the response reached a final status (its final event was read)."""
        return self._finished is not None

    @property
    def status(self) -> str | None:
        """The last status the stream reported (``queued``, ``in_progress``, ``completed``...)."""
        return self._status

    @property
    def events(self) -> int:
        """Events received so far."""
        return self._events

    @property
    def deltas(self) -> int:
        """Output deltas received so far (roughly, tokens seen)."""
        return self._deltas

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return self._last_seq

    # ---------------------------------------------------------------- the end

    @property
    def final_response(self) -> Response | None:
        """The final response, if it finished ``completed`` or ``incomplete``."""
        if self._finished in ("completed", "incomplete"):
            return self._final
        return None

    @property
    def outcome(self) -> StreamOutcome | None:
        """How it ended, once finished (``None`` before)."""
        return self._outcome

    def require_outcome(self) -> StreamOutcome:
        """The outcome; a ``RuntimeError`` while the stream has not ended."""
        if self._outcome is None:
            raise RuntimeError("the outcome is known once the `async with` block has exited")
        return self._outcome

    def _build_outcome(self) -> StreamOutcome:
        """The outcome, made of the facts as they are now (``ResponseGuard._finish``)."""
        receipt = self._receipt
        return StreamOutcome(
            response_id=self._response_id,
            model=self._model,
            background=self._background,
            reason=self._reason or "exception",
            status=self._status,
            events=self._events,
            deltas=self._deltas,
            last_sequence_number=self._last_seq,
            usage=None if self._final is None else self._final.usage,
            receipt=receipt,
            resumes=self._resumes,
            cleanup_error=self._cleanup_error or (receipt.error if receipt is not None else None),
            started_at=self._started,
            ended_at=anyio.current_time(),
        )
