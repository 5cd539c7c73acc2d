"""tether on Temporal: a workflow's cancel stops the model, a dead worker regenerates nothing.

Inside a Temporal activity, [`guarded_stream`][tether.temporal.guarded_stream] opens a
background stream guarded like [`tether.guarded_stream`][tether.guarded_stream], and keeps
a [`Checkpoint`][tether.temporal.Checkpoint] (the response id, the last sequence number) in
the activity's heartbeat details. A cancelled activity cancels its response on the server
within ``grace``; a retried one resumes the response its last heartbeat names instead of
creating a second one. Needs the ``tether[temporal]`` extra (``temporalio``). Activities
run on asyncio: so does this module. See the "Running on Temporal" page of the docs.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
import anyio.abc
import openai
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from ._build import StreamOptions, build_guard, resume_guard
from ._cancel import cancel_on_server, log
from ._compat import swap_heartbeat
from ._errors import DeadlineExceeded, TetherError
from ._outcome import DetachedResponse
from ._scope import Scope, as_scope
from ._stream import GuardedStream
from ._temporal_checkpoint import (
    CANCEL_ACTIVITY,
    Checkpoint,
    cancel_from_failure,
    checkpoint_from_failure,
    split_details,
)
from ._validate import check_positive, check_timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from anyio.abc import TaskGroup
    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import CancelReceipt, StreamOutcome

__all__ = [
    "Checkpoint",
    "NotInActivity",
    "ResponseCanceller",
    "ResumeFailed",
    "TemporalStream",
    "cancel_from_failure",
    "checkpoint_from_failure",
    "guarded_stream",
    "user_details",
]

_MAX_THROTTLE = 60.0  # the worker's max_heartbeat_throttle_interval default (seconds)
_DEFAULT_THROTTLE = 30.0  # its default_heartbeat_throttle_interval, with no heartbeat timeout
_GONE = frozenset({"cancelled", "failed"})


class NotInActivity(TetherError, RuntimeError):
    """``tether.temporal.guarded_stream`` was called outside an activity, or in workflow code.

    Raised before any request. Workflow code must stay deterministic (no network, no clock):
    stream in an activity and execute it from the workflow; outside Temporal, use
    [`tether.guarded_stream`][tether.guarded_stream].

    Example:
        ```python
        try:
            tether.temporal.guarded_stream(client, model="fast", input="Hi")
        except tether.temporal.NotInActivity as exc:
            print(exc)  # ... use tether.guarded_stream() instead
        ```
    """


class ResumeFailed(TetherError, ApplicationError):
    """A retried activity's checkpoint names a response that can no longer give its result.

    The response was ``cancelled`` (by a workflow's cancel, a timeout, an operator), ``failed``
    on the server, or is ``gone`` (expired, deleted, never stored). A Temporal
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
        """``"cancelled"``, ``"failed"`` or ``"gone"``."""


def user_details() -> tuple[Any, ...]:
    """The previous attempt's own heartbeat details, without tether's checkpoint.

    Returns:
        ``activity.info().heartbeat_details`` minus its first item when that is tether's.

    Example:
        ```python
        done = tether.temporal.user_details()  # what your last activity.heartbeat(...) said
        ```
    """
    return split_details(activity.info().heartbeat_details)[1]


def _check_context() -> activity.Info:
    if workflow.in_workflow():
        raise NotInActivity(
            "tether.temporal.guarded_stream() was called in workflow code: a stream does "
            "network I/O and reads the clock, which Temporal's deterministic workflow code "
            "must not; stream in an activity (@activity.defn) and run it with "
            "workflow.execute_activity()"
        )
    if not activity.in_activity():
        raise NotInActivity(
            "tether.temporal.guarded_stream() runs inside a Temporal activity (@activity.defn); "
            "outside one, use tether.guarded_stream() instead"
        )
    return activity.info()


def _attempt_left(info: activity.Info) -> float | None:
    """Seconds until the server ends this attempt (start-to-close, schedule-to-close)."""
    ends: list[datetime] = []
    if info.start_to_close_timeout:
        ends.append(info.started_time + info.start_to_close_timeout)
    if info.schedule_to_close_timeout:
        ends.append(info.scheduled_time + info.schedule_to_close_timeout)
    if not ends:
        return None
    return max((min(ends) - datetime.now(timezone.utc)).total_seconds(), 1e-3)


def _beat_interval(info: activity.Info) -> float:
    """Half the SDK's throttle (0.8 x heartbeat_timeout): one heartbeat always pending."""
    timeout = info.heartbeat_timeout
    throttle = min(timeout.total_seconds() * 0.8, _MAX_THROTTLE) if timeout else _DEFAULT_THROTTLE
    return max(throttle / 2, 0.01)


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
        "_checkpoint",
        "_create",
        "_left",
        "_on_lost",
        "_options",
        "_original",
        "_resume_from",
        "_resumed",
        "_scope",
        "_stream",
        "_tasks",
        "_user",
    )

    def __init__(
        self,
        scope: Scope,
        create: GuardedStream,
        options: dict[str, Any],
        *,
        checkpoint: Checkpoint | None,
        user: tuple[Any, ...],
        resume_from: Literal["start", "checkpoint"],
        on_lost: Literal["raise", "restart"],
        left: float | None,
        beat_every: float,
    ) -> None:
        self._scope = scope
        self._create = create
        self._options = options
        self._checkpoint = checkpoint
        self._user = user
        self._resume_from = resume_from
        self._on_lost = on_lost
        self._left = left
        self._beat_every = beat_every
        self._resumed = False
        self._stream: GuardedStream | None = None
        self._tasks: TaskGroup | None = None
        self._beating: anyio.CancelScope | None = None
        self._original: Callable[..., None] | None = None

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
        """The stream to open: the checkpoint's response (checked first), or a new one."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            return self._create
        try:
            status = (await self._scope.client.responses.retrieve(checkpoint.response_id)).status
        except openai.NotFoundError:
            status = "gone"
        if status in _GONE or status == "gone":
            if self._on_lost == "raise":
                raise ResumeFailed(checkpoint.response_id, status or "gone")
            return self._create
        self._resumed = True
        seq = checkpoint.sequence_number if self._resume_from == "checkpoint" else None
        handle = DetachedResponse(response_id=checkpoint.response_id, last_sequence_number=seq)
        return GuardedStream(resume_guard(self._scope, handle, **self._options), self._left)

    async def __aenter__(self) -> TemporalStream:
        left = self._left
        stream: GuardedStream | None = None
        with anyio.CancelScope(
            deadline=math.inf if left is None else anyio.current_time() + left
        ) as bound:
            stream = await self._choose()
        if stream is None or bound.cancelled_caught:
            raise DeadlineExceeded(left or 0.0)
        await stream.__aenter__()
        self._stream = stream
        # The id reaches Temporal before the first event reaches the caller.
        self._beat(stream.last_sequence_number if self._resumed else None)
        try:
            self._merge_user_heartbeats()
            tasks = self._tasks = anyio.create_task_group()
            await tasks.__aenter__()  # inside the stream's own deadline scope
            await tasks.start(self._keep_beating)
        except BaseException as exc:
            await self._stop_beating()
            await stream.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._require("__aexit__")
        try:
            await self._stop_beating()
        finally:
            await stream.__aexit__(exc_type, exc, tb)
        self._beat(stream.last_sequence_number)  # the final checkpoint

    async def _stop_beating(self) -> None:
        """End the heartbeat loop (its own scope: the task group never sees the body's
        exception, so it can neither swallow nor wrap it) and give the SDK its heartbeat back."""
        if self._original is not None:
            swap_heartbeat(self._original, unless=self._heartbeat)
        tasks, self._tasks = self._tasks, None
        if self._beating is not None:
            self._beating.cancel()
        if tasks is not None:
            await tasks.__aexit__(None, None, None)

    def _merge_user_heartbeats(self) -> None:
        """``activity.heartbeat(*details)`` in the block: tether's checkpoint goes first."""
        self._original = swap_heartbeat(self._heartbeat)

    def _heartbeat(self, *details: Any) -> None:
        self._user = details
        self._beat(self.last_sequence_number)

    def _beat(self, seq: int | None) -> None:
        response_id = self.response_id
        if response_id is None:
            return
        send = self._original or activity.heartbeat
        try:
            send(Checkpoint(response_id=response_id, sequence_number=seq).to_detail(), *self._user)
        except Exception as exc:  # the SDK's own failures cancel the activity; never ours
            log.warning("heartbeat of response %s failed: %s", response_id, exc)

    async def _keep_beating(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Heartbeat often enough that a cancel is heard within the SDK's throttle, events
        or none (a model thinking for a minute sends nothing): nothing is paid per event."""
        with anyio.CancelScope() as self._beating:
            task_status.started()
            while True:
                await anyio.sleep(self._beat_every)
                self._beat(self.last_sequence_number)

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


def guarded_stream(
    scope: Scope | AsyncOpenAI,
    *,
    resume_from: Literal["start", "checkpoint"] = "start",
    on_lost: Literal["raise", "restart"] = "raise",
    grace: float | None = None,
    first_event_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    key: str | None = None,
    **create_kwargs: Any,
) -> TemporalStream:
    """In an activity: a guarded background stream, checkpointed in the activity's heartbeats.

    On entry, a retried attempt whose last heartbeat names a response checks it and resumes
    it (``retrieve(id, stream=True)``) instead of creating a second one; otherwise a new
    background response is created, tagged with ``metadata`` (``temporal_workflow_id``,
    ``temporal_activity_id``, ``temporal_attempt``) and recorded in the scope's journal if it
    has one. Its id is heartbeated as soon as ``response.created`` is read, then heartbeats
    go on at half the SDK's throttle (0.8 x ``heartbeat_timeout``) whether events come or
    not. When the activity is cancelled (the workflow's cancel, a heartbeat timeout, worker
    shutdown), the response is cancelled on the server within ``grace`` and the native
    cancellation goes on; tether's own deadline (start time + start-to-close timeout) does
    the same if the worker never hears from the server.

    Args:
        scope: A [`Scope`][tether.Scope] or an ``openai.AsyncOpenAI``.
        resume_from: ``"start"``: a resumed response replays from ``sequence_number`` 0, so
            the attempt sees every event once. ``"checkpoint"``: from after the checkpoint's
            sequence number, for activities that keep their own progress.
        on_lost: What a retry does when its checkpoint's response was cancelled, failed or
            is gone: ``"raise"`` [`ResumeFailed`][tether.temporal.ResumeFailed]
            (non-retryable), or ``"restart"`` a new response (its tokens are generated again).
        grace: Seconds the server-side cancel may take (default: the scope's).
        first_event_timeout: Seconds to wait for ``response.created`` (default: the scope's).
        idle_timeout: Seconds without any event, or ``None``.
        deadline: Seconds for the whole block, or ``None``; the attempt's own end applies too.
        key: A job key for the scope's journal (default: ``temporal:<workflow id>:<activity id>``).
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`TemporalStream`][tether.temporal.TemporalStream], to use as ``async with``.

    Raises:
        NotInActivity: Called outside an activity, or in workflow code (before any request).
        ResumeFailed: On entry, the checkpoint's response cannot be resumed.
        DeadlineExceeded: The attempt's deadline (or ``deadline``) ran out; the response was
            cancelled on the server first.
        ValueError: ``background=False`` or ``stream=`` given, a timeout out of range.

    Example:
        ```python
        @activity.defn
        async def essay(prompt: str) -> str:
            async with tether.temporal.guarded_stream(client, model="gpt-5", input=prompt) as s:
                return (await s.get_final_response()).output_text
        ```

    Added in version 0.2.
    """
    info = _check_context()
    if create_kwargs.pop("background", True) is not True:
        raise ValueError(
            "tether.temporal.guarded_stream always runs background responses: "
            "do not pass background=False"
        )
    if resume_from not in ("start", "checkpoint"):
        raise ValueError(f"resume_from must be 'start' or 'checkpoint', got {resume_from!r}")
    if on_lost not in ("raise", "restart"):
        raise ValueError(f"on_lost must be 'raise' or 'restart', got {on_lost!r}")
    limit = check_timeout("deadline", deadline)
    left = _attempt_left(info)
    if limit is not None:
        left = limit if left is None else min(left, limit)
    metadata: Any = create_kwargs.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {metadata!r}")
    create_kwargs["metadata"] = {
        **metadata,
        "temporal_workflow_id": info.workflow_id or "",
        "temporal_activity_id": info.activity_id,
        "temporal_attempt": str(info.attempt),
    }
    the_scope = as_scope(scope)
    options: dict[str, Any] = {
        "grace": grace,
        "first_event_timeout": first_event_timeout,
        "idle_timeout": idle_timeout,
    }
    own = StreamOptions(key=key or f"temporal:{info.workflow_id}:{info.activity_id}", **options)
    create = GuardedStream(
        build_guard(the_scope, own, create_kwargs),
        left,
    )
    checkpoint, user = split_details(info.heartbeat_details)
    return TemporalStream(
        the_scope,
        create,
        options,
        checkpoint=checkpoint,
        user=user,
        resume_from=resume_from,
        on_lost=on_lost,
        left=left,
        beat_every=_beat_interval(info),
    )


@final
class ResponseCanceller:
    """The activity that cancels a response by id, for [`cancel_from_failure`][tether.temporal.cancel_from_failure].

    Register its bound method on a worker: ``activities=[canceller.cancel_response]``.

    Args:
        scope: A [`Scope`][tether.Scope] or an ``openai.AsyncOpenAI`` (on the same API).
        grace: Seconds the cancel may take.

    Example:
        ```python
        canceller = tether.temporal.ResponseCanceller(client)
        worker = Worker(temporal, task_queue="q", workflows=[...],
                        activities=[essay, canceller.cancel_response])
        ```
    """

    def __init__(self, scope: Scope | AsyncOpenAI, *, grace: float = 5.0) -> None:
        self._scope = as_scope(scope)
        self._grace = check_positive("grace", grace)

    @activity.defn(name=CANCEL_ACTIVITY)
    async def cancel_response(self, response_id: str) -> str:
        """Cancel *response_id* on the server; the status the server confirmed.

        Raises:
            ApplicationError: The server did not answer within grace (retryable).
        """
        receipt = await cancel_on_server(self._scope.client, response_id, grace=self._grace)
        if receipt.status is None:
            raise ApplicationError(f"cancel of {response_id}: {receipt.error}", type="CancelFailed")
        return receipt.status
