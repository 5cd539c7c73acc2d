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

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, final

import anyio
import openai
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from ._build import StreamOptions, build_guard
from ._cancel import cancel_on_server
from ._errors import TetherError
from ._public import claim as _claim
from ._scope import Scope, as_scope
from ._temporal_checkpoint import CANCEL_ACTIVITY, Checkpoint, checkpoints_from_failure
from ._temporal_heartbeat import Heartbeats
from ._temporal_retry import NextAttempt
from ._temporal_stream import ResumeFailed, TemporalStream
from ._validate import check_positive, check_timeout

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = [
    "Checkpoint",
    "NotInActivity",
    "ResponseCanceller",
    "ResumeFailed",
    "TemporalStream",
    "guarded_stream",
]

_MAX_THROTTLE = 60.0  # the worker's max_heartbeat_throttle_interval default (seconds)
_DEFAULT_THROTTLE = 30.0  # its default_heartbeat_throttle_interval, with no heartbeat timeout


class NotInActivity(TetherError, RuntimeError):
    """``tether.temporal.guarded_stream`` was called outside an async activity.

    Outside any activity, in workflow code, or in a sync activity (one the worker runs in a
    thread of its ``activity_executor``): tether.temporal streams in ``async def``
    activities, on the worker's event loop.

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
    try:
        anyio.get_current_task()
    except RuntimeError:  # no event loop in this thread (anyio's NoEventLoopError)
        raise NotInActivity(
            "tether.temporal.guarded_stream() was called in a sync activity (run by the "
            "worker's activity_executor, in a thread): it streams in async activities; "
            "make the activity `async def` and give it an openai.AsyncOpenAI"
        ) from None
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
    not. The response belongs to the activity, not to one attempt: when Temporal ends the
    attempt and will run another (a worker shutdown, a pause, a reset, a timeout, tether's
    own deadline at the attempt's start-to-close), the stream is closed and the response
    left for that attempt to resume (outcome reason ``detached``), once Temporal holds a
    checkpoint naming it. Otherwise (the workflow's cancel, the last attempt, a closed
    workflow, no checkpoint yet, or the code itself ending the block: an exception,
    ``deadline=``, a ``break``) it is cancelled on the server within ``grace``, and the
    last checkpoint says so: a retry then starts a new response. Either way, what ended
    the block goes on.

    Args:
        scope: A [`Scope`][tether.Scope] or an ``openai.AsyncOpenAI``.
        resume_from: ``"start"``: a resumed response replays from ``sequence_number`` 0, so
            the attempt sees every event once. ``"checkpoint"``: from after the checkpoint's
            sequence number, for activities that keep their own progress.
        on_lost: What a retry does when its checkpoint's response was cancelled, failed or
            is gone: ``"raise"`` [`ResumeFailed`][tether.temporal.ResumeFailed]
            (non-retryable), or ``"restart"`` a new response (its tokens are generated again).
            A response the previous attempt cancelled itself always starts anew.
        grace: Seconds the server-side cancel may take (default: the scope's).
        first_event_timeout: Seconds to wait for ``response.created`` (default: the scope's).
        idle_timeout: Seconds without any event, or ``None``.
        deadline: Seconds for the whole block, or ``None``; the attempt's own end applies too.
        key: A job key for the scope's journal (default: ``temporal:<workflow id>:<activity id>``).
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`TemporalStream`][tether.temporal.TemporalStream], to use as ``async with``.

    Raises:
        NotInActivity: Called outside an async activity: outside any, in workflow code, or
            in a sync activity (before any request).
        ResumeFailed: On entry, the checkpoint's response cannot be resumed.
        DeadlineExceeded: The attempt's deadline (or ``deadline``) ran out; the stream was
            stopped first (handed to the next attempt, or cancelled if none follows).
        TypeError: *scope* is a sync ``openai.OpenAI``.
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
    left = attempt_left = _attempt_left(info)
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
    if isinstance(scope, openai.OpenAI):
        raise TypeError(
            f"scope must be an openai.AsyncOpenAI or a tether.Scope, got a sync "
            f"{type(scope).__name__}: tether.temporal streams in async activities "
            "(`async def`); give the activity an openai.AsyncOpenAI"
        )
    the_scope = as_scope(scope)
    options: dict[str, Any] = {
        "grace": grace,
        "first_event_timeout": first_event_timeout,
        "idle_timeout": idle_timeout,
    }
    own = StreamOptions(key=key or f"temporal:{info.workflow_id}:{info.activity_id}", **options)
    create = build_guard(the_scope, own, create_kwargs)
    return TemporalStream(
        the_scope,
        create,
        options,
        beats=Heartbeats.of_attempt(),
        resume_from=resume_from,
        on_lost=on_lost,
        left=left,
        beat_every=_beat_interval(info),
        next_attempt=NextAttempt(info, attempt_left),
    )


@final
class ResponseCanceller:
    """The activity that cancels a response by id, and the workflow's call that runs it.

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

    @staticmethod
    async def cancel_from_failure(
        error: BaseException,
        *,
        start_to_close_timeout: timedelta = timedelta(seconds=30),
        task_queue: str | None = None,
    ) -> str | None:
        """In workflow code: cancel on the server the responses a failed activity left running.

        When the workflow gives up on an activity (its retries ran out, it timed out, or the
        workflow is being cancelled) while the worker that streamed is dead, nobody is left
        to cancel its responses. This runs the ``tether.cancel_response`` activity (register
        [`ResponseCanceller`][tether.temporal.ResponseCanceller]'s method on a worker) for
        each response the failure's last heartbeat names that may still be generating (not
        ``finished``, not ``stopped``: usually one, more when the activity streamed several
        at once), concurrently. Deterministic: only Temporal's workflow API.

        Args:
            error: What ``workflow.execute_activity`` raised.
            start_to_close_timeout: For each cancelling activity (retried until it succeeds,
                within Temporal's default retry policy).
            task_queue: Where a worker runs the cancelling activity (default: the workflow's).

        Returns:
            The status the server confirmed (``"cancelled"``, ``"completed"``, ``"gone"``...)
            for the last of them (the response of the last stream the activity opened), or
            ``None`` when the failure left none to cancel.

        Example:
            ```python
            try:
                return await workflow.execute_activity(essay, prompt, ...)
            except ActivityError as err:
                await tether.temporal.ResponseCanceller.cancel_from_failure(err)
                raise
            ```
        """
        left = [
            point.response_id
            for point in checkpoints_from_failure(error)
            if point is not None and not point.finished and not point.stopped
        ]
        cancels = [
            workflow.start_activity(
                CANCEL_ACTIVITY,
                response_id,
                result_type=str,
                start_to_close_timeout=start_to_close_timeout,
                task_queue=task_queue,
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            )
            for response_id in left
        ]
        status: str | None = None
        for cancel in cancels:
            status = await cancel
        return status


_claim(__name__, globals(), __all__)
