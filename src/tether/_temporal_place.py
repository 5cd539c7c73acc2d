"""One stream's place in an attempt's heartbeat: what a retry resumes there, what it says.

Shared by the two faces of ``tether.temporal.guarded_stream``: ``TemporalStream`` (an
``async def`` activity, on the worker's loop) and ``SyncTemporalStream`` (a sync activity,
on a ``tether.sync`` portal's loop). Each stream *takes* the attempt's next place as its
block is entered (``Heartbeats.take``: the previous attempt's checkpoint there, if any),
*chooses* its guard (that checkpoint's response, checked and resumed, or a new one), is
*followed* once it opened (its checkpoint read at every heartbeat from then on), and
*leaves* with its last checkpoint (``stopped``, ``finished``, or as it was). Every method
runs on the stream's event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, final

import openai
from temporalio.exceptions import ApplicationError

from ._build import resume_guard
from ._cancel import log
from ._errors import TetherError
from ._outcome import DetachedResponse
from ._temporal_checkpoint import Checkpoint

if TYPE_CHECKING:
    from ._outcome import StreamOutcome
    from ._protocol import ResponseGuard
    from ._scope import Scope
    from ._temporal_heartbeat import Heartbeats
    from ._temporal_retry import NextAttempt

__all__ = ["Place", "Position", "ResumeFailed"]

_LOST = frozenset({"cancelled", "gone"})  # no result, and nothing says a retry may redo it
_REPLAYABLE = frozenset({"completed", "incomplete"})  # ended on its own, with a result


class ResumeFailed(TetherError, ApplicationError):
    """A retried activity's checkpoint names a response that can no longer give its result.

    The response was ``cancelled`` (by a workflow's cancel, a timeout, an operator) or is
    ``gone`` (expired, deleted, never stored); one that ``failed`` on the server is created
    anew instead, as a retry after a failure means. A Temporal
    ``ApplicationError`` of type ``"ResumeFailed"``, **non-retryable**: Temporal keeps the
    last heartbeat's details for every later attempt, which would all fail the same way.
    Pass ``on_lost="restart"`` to start a new response instead.

    Example:
        ```python
        try:
            await workflow.execute_activity(essay, prompt, ...)
        except ActivityError as err:
            cause = err.cause  # ApplicationError, type "ResumeFailed", non_retryable
        ```
    """

    def __init__(self, response_id: str, status: str) -> None:
        super().__init__(
            f"the checkpointed response {response_id} is {status}: it cannot be resumed "
            "(on_lost='restart' starts a new response instead)",
            type="ResumeFailed",
            non_retryable=True,
        )
        self.response_id = response_id
        """The response the checkpoint named."""
        self.status = status
        """``"cancelled"`` or ``"gone"``."""


class Position(Protocol):
    """Where a stream's reader is, as its code has been handed it."""

    @property
    def response_id(self) -> str | None: ...

    @property
    def last_sequence_number(self) -> int | None: ...


@final
class Place:
    """One guarded stream's place among its attempt's (see the module's docstring)."""

    __slots__ = (
        "_beats",
        "_checkpoint",
        "_create",
        "_fresh",
        "_index",
        "_next",
        "_on_lost",
        "_options",
        "_resume_from",
        "_scope",
        "resumed",
    )

    def __init__(
        self,
        scope: Scope,
        create: ResponseGuard,
        options: dict[str, Any],
        *,
        beats: Heartbeats,
        resume_from: Literal["start", "checkpoint"],
        on_lost: Literal["raise", "restart"],
        next_attempt: NextAttempt,
    ) -> None:
        self._scope = scope
        self._create = create
        self._options = options
        self._beats = beats
        self._resume_from = resume_from
        self._on_lost = on_lost
        self._next = next_attempt
        self._checkpoint: Checkpoint | None = None  # the previous attempt's, in this place
        self._index = -1  # this stream's place among the attempt's (Heartbeats.take)
        self._fresh = False  # a new response's first beat: no event reached the code yet
        self.resumed: bool = False
        """Whether the stream resumed the response of the previous attempt's checkpoint."""

    @property
    def beats(self) -> Heartbeats:
        """The attempt's heartbeat."""
        return self._beats

    def take(self) -> None:
        """The block is entered: take the next place (and its previous checkpoint)."""
        self._next.start()
        self._index, self._checkpoint = self._beats.take()

    async def choose(self) -> ResponseGuard:
        """The guard to open: the checkpoint's response (checked first), or a new one.

        Its ``handover`` hook asks ``NextAttempt`` when it closes (``_temporal_retry.py``):
        a stop that another attempt will resume hands the response over, closed and not
        cancelled, whether it comes during the open (a resume's) or after.
        """
        guard = self._create
        checkpoint = self._checkpoint
        if checkpoint is not None and not checkpoint.stopped:  # stopped: its attempt cancelled it
            try:
                response = await self._scope.client.responses.retrieve(checkpoint.response_id)
                status = response.status
            except openai.NotFoundError:
                status = "gone"
            if status == "failed":  # what Temporal retries for: a new response
                log.warning(
                    "tether.temporal: the checkpointed response %s failed on the server: "
                    "this attempt creates a new one",
                    checkpoint.response_id,
                )
            elif status not in _LOST:
                self.resumed = True
                seq = checkpoint.sequence_number if self._resume_from == "checkpoint" else None
                handle = DetachedResponse(
                    response_id=checkpoint.response_id, last_sequence_number=seq
                )
                guard = resume_guard(self._scope, handle, **self._options)
            elif self._on_lost == "raise":
                raise ResumeFailed(checkpoint.response_id, status or "gone")
        chosen = guard
        guard.handover = lambda exc: self._next.resumes(
            exc, chosen.response_id, checkpoint=self._held(chosen.response_id)
        )
        return guard

    def _held(self, response_id: str | None) -> bool | None:
        """Whether Temporal holds a checkpoint naming the response: True (this attempt
        resumed it), None (a heartbeat named it: ask), False (none did)."""
        if self.resumed:
            return True
        return None if response_id is not None and self._beats.named(response_id) else False

    def follow(self, stream: Position) -> None:
        """The stream has opened: its id reaches Temporal before its first event reaches
        the code, then its checkpoint is read at every heartbeat."""
        self._beats.follow(self._index, lambda: self._point(stream))
        self._fresh = not self.resumed
        self._beats.beat()
        self._fresh = False

    def _point(self, stream: Position) -> Checkpoint | None:
        """The checkpoint now, read at each heartbeat: nothing is done per event."""
        response_id = stream.response_id
        if response_id is None:
            return None
        seq = None if self._fresh else stream.last_sequence_number
        return Checkpoint(response_id=response_id, sequence_number=seq)

    def leave(self, stream: Position | None, outcome: StreamOutcome | None) -> None:
        """The last checkpoint: ``stopped`` when this attempt cancelled the response or saw
        it fail (a retry then starts a new one instead of failing to resume it:
        ``ResumeFailed``), ``finished`` when it ended with a result (a retry replays it).
        With no *stream* (it never opened) or no *outcome* (its stop did not get to its
        end), nothing new is said."""
        response_id = None if stream is None else stream.response_id
        last = None
        if stream is not None and outcome is not None and response_id is not None:
            last = Checkpoint(
                response_id=response_id,
                sequence_number=stream.last_sequence_number,
                stopped=outcome.receipt is not None or outcome.reason == "failed",
                finished=outcome.receipt is None and outcome.reason in _REPLAYABLE,
            )
        self._beats.leave(self._index, last)
