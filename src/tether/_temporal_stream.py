"""TemporalStream: a guarded stream inside a Temporal activity, checkpointed in its heartbeats.

Made by ``tether.temporal.guarded_stream`` (``temporal.py``, which checks the activity's
context and builds the stream): on entry it resumes the checkpoint's response or creates a
new one (``ResumeFailed`` when the checkpoint's response can no longer give its result),
then keeps its checkpoint in the attempt's heartbeat (``_temporal_heartbeat.py``: every
stream's, the user's own details after them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
import anyio.abc
import openai
from temporalio.exceptions import ApplicationError

from ._build import resume_guard
from ._cancel import log
from ._errors import DeadlineExceeded, TetherError
from ._outcome import DetachedResponse
from ._stream import GuardedStream
from ._temporal_checkpoint import Checkpoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from anyio.abc import TaskGroup
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import CancelReceipt, StreamOutcome
    from ._protocol import ResponseGuard
    from ._scope import Scope
    from ._temporal_heartbeat import Heartbeats
    from ._temporal_retry import NextAttempt

__all__ = ["ResumeFailed", "TemporalStream"]

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


@final
class TemporalStream:
    """A guarded stream inside a Temporal activity, checkpointed in its heartbeats.

    Made by [`tether.temporal.guarded_stream`][tether.temporal.guarded_stream]; use it as an
    async context manager, as a [`GuardedStream`][tether.GuardedStream] (its events, its
    ``text_deltas()``, ``get_final_response()``, ``cancel()`` and ``outcome``).

    Example:
        ```python
        async with tether.temporal.guarded_stream(client, model="gpt-5", input=p) as stream:
            print(stream.response_id, stream.resumed)
            return (await stream.get_final_response()).output_text
        ```
    """

    __slots__ = (
        "_beat_every",
        "_beating",
        "_beats",
        "_checkpoint",
        "_create",
        "_fresh",
        "_index",
        "_left",
        "_next",
        "_on_lost",
        "_options",
        "_resume_from",
        "_resumed",
        "_scope",
        "_stream",
        "_tasks",
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
        left: float | None,
        beat_every: float,
        next_attempt: NextAttempt,
    ) -> None:
        self._scope = scope
        self._create = create
        self._options = options
        self._beats = beats
        self._checkpoint: Checkpoint | None = None  # the previous attempt's, in this place
        self._index = -1  # this stream's place among the attempt's (Heartbeats.take)
        self._fresh = False  # a new response's first beat: no event reached the code yet
        self._resume_from = resume_from
        self._on_lost = on_lost
        self._left = left
        self._beat_every = beat_every
        self._next = next_attempt
        self._resumed = False
        self._stream: GuardedStream | None = None
        self._tasks: TaskGroup | None = None
        self._beating: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<tether.temporal.TemporalStream response_id={self.response_id!r}>"

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``async with`` body runs."""
        return None if self._stream is None else self._stream.response_id

    @property
    def resumed(self) -> bool:
        """Whether this attempt resumed the response of a previous attempt's checkpoint."""
        return self._resumed

    @property
    def user_details(self) -> tuple[Any, ...]:
        """Your own heartbeat details, without tether's checkpoint: the previous attempt's
        (what its last ``activity.heartbeat(...)`` said) until you heartbeat in this one.

        Example:
            ```python
            async with tether.temporal.guarded_stream(client, model="m", input=p) as stream:
                done = stream.user_details  # () on a first attempt
            ```
        """
        return self._beats.user

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return None if self._stream is None else self._stream.last_sequence_number

    @property
    def outcome(self) -> StreamOutcome:
        """How the stream ended, once the block exited (see ``GuardedStream.outcome``)."""
        return self._require("outcome").outcome

    def _require(self, what: str) -> GuardedStream:
        if self._stream is None:
            raise RuntimeError(f"{what} needs an open stream: use it inside `async with`")
        return self._stream

    async def _choose(self) -> GuardedStream:
        """The stream to open: the checkpoint's response (checked first), or a new one.

        Its guard asks ``NextAttempt`` when it closes (``_temporal_retry.py``): a stop that
        another attempt will resume hands the response over, closed and not cancelled,
        whether it comes during the open (a resume's) or after.
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
                self._resumed = True
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
        return GuardedStream(guard, self._left)

    def _held(self, response_id: str | None) -> bool | None:
        """Whether Temporal holds a checkpoint naming the response: True (this attempt
        resumed it), None (a heartbeat named it: ask), False (none did)."""
        if self._resumed:
            return True
        return None if response_id is not None and self._beats.named(response_id) else False

    def _point(self) -> Checkpoint | None:
        """The checkpoint now, read at each heartbeat: nothing is done per event."""
        stream = self._stream
        response_id = None if stream is None else stream.response_id
        if stream is None or response_id is None:
            return None
        seq = None if self._fresh else stream.last_sequence_number
        return Checkpoint(response_id=response_id, sequence_number=seq)

    async def __aenter__(self) -> TemporalStream:
        left = self._left
        self._next.start()
        self._index, self._checkpoint = self._beats.take()
        stream: GuardedStream | None = None
        try:
            # The attempt stays alive while the stream opens (a scope's slot, a resume's
            # check): until it has, a heartbeat says only what the attempt had said.
            await self._start_beating()
            with anyio.CancelScope(
                deadline=math.inf if left is None else anyio.current_time() + left
            ) as bound:
                stream = await self._choose()
            if stream is None or bound.cancelled_caught:
                raise DeadlineExceeded(left or 0.0)
            self._stream = stream
            await stream.__aenter__()
        except BaseException:
            try:
                await self._stop_beating()
            finally:
                if stream is None:
                    self._beats.leave(self._index, None)
                else:
                    self._final_beat(stream)
            raise
        # The id reaches Temporal before the first event reaches the caller.
        self._beats.follow(self._index, self._point)
        self._fresh = not self._resumed
        self._beats.beat()
        self._fresh = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._require("__aexit__")
        try:
            await stream.__aexit__(exc_type, exc, tb)  # the guard asks NextAttempt: _choose
        finally:
            try:
                await self._stop_beating()
            finally:
                self._final_beat(stream)

    def _final_beat(self, stream: GuardedStream) -> None:
        """The last checkpoint: ``stopped`` when this attempt cancelled the response or saw
        it fail (a retry then starts a new one instead of failing to resume it:
        ``ResumeFailed``), ``finished`` when it ended with a result (a retry replays it)."""
        response_id = stream.response_id
        try:
            outcome = stream.outcome
        except RuntimeError:  # the stop did not get to its end: say nothing new
            outcome = None
        last = None
        if outcome is not None and response_id is not None:
            last = Checkpoint(
                response_id=response_id,
                sequence_number=stream.last_sequence_number,
                stopped=outcome.receipt is not None or outcome.reason == "failed",
                finished=outcome.receipt is None and outcome.reason in _REPLAYABLE,
            )
        self._beats.leave(self._index, last)

    async def _start_beating(self) -> None:
        """Start the heartbeat loop, in a task group around the whole stream (its own
        deadline scope opens inside it)."""
        if not self._beats.durable:
            return  # a local activity: no heartbeat to keep
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        await tasks.start(self._keep_beating)

    async def _stop_beating(self) -> None:
        """End the heartbeat loop (its own scope: the task group never sees the body's
        exception, so it can neither swallow nor wrap it)."""
        tasks, self._tasks = self._tasks, None
        if self._beating is not None:
            self._beating.cancel()
        if tasks is not None:
            await tasks.__aexit__(None, None, None)

    async def _keep_beating(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Heartbeat often enough that a cancel is heard within the SDK's throttle, events
        or none (a model thinking for a minute sends nothing): nothing is paid per event."""
        with anyio.CancelScope() as self._beating:
            task_status.started()
            while True:
                await anyio.sleep(self._beat_every)
                self._beats.beat()

    def __aiter__(self) -> AsyncIterator[ResponseStreamEvent]:
        return self._require("iterating the stream").__aiter__()

    def text_deltas(self) -> AsyncIterator[str]:
        """Iterate the output text as it arrives (see ``GuardedStream.text_deltas``).

        Example:
            ```python
            text = "".join([delta async for delta in stream.text_deltas()])
            ```
        """
        return self._require("text_deltas()").text_deltas()

    async def get_final_response(self) -> Response:
        """Read to the end and return the final ``Response`` (see ``GuardedStream``).

        Example:
            ```python
            return (await stream.get_final_response()).output_text
            ```
        """
        return await self._require("get_final_response()").get_final_response()

    async def cancel(self) -> CancelReceipt:
        """Stop now: close the stream and cancel the response on the server, within grace.

        Example:
            ```python
            receipt = await stream.cancel()
            ```
        """
        return await self._require("cancel()").cancel()
