"""Whether Temporal runs another attempt after this one: then the response is left for it.

A background response belongs to the activity, not to one attempt of it. When the block of
``tether.temporal.guarded_stream`` is left early, ``TemporalStream`` asks ``NextAttempt``
whether Temporal will run the activity again; if so, the stream is *handed over*: closed,
not cancelled (``GuardedStream.detach``, outcome reason ``detached``), and the next
attempt resumes the response its checkpoint names. Otherwise it is cancelled on the
server, as ``tether.guarded_stream`` does. Cancelling a response that a next attempt was
going to resume would make that attempt fail (``ResumeFailed``, non-retryable) or pay for
the response twice (``on_lost="restart"``).

Another attempt follows when, and only when, this one ends by:

- a worker shutdown, a pause, an activity reset, a timeout Temporal reports (its
  cancellation details), or tether's own deadline (the attempt's start-to-close, or
  ``deadline=``: ``DeadlineExceeded`` then leaves the block);
- an exception Temporal retries: not a non-retryable ``ApplicationError``, not a type the
  retry policy lists as non-retryable;
- and attempts are left: fewer than the policy's ``maximum_attempts``, before the
  schedule-to-close deadline.

A workflow's cancel request, a normal exit (the response finished, or a ``break``) and a
cancel scope of the user's own stop the response. So does "not found" (the server no longer
knows the attempt) unless Temporal says, within a few seconds, that the workflow still runs
(then the attempt timed out and is retried); a terminated workflow runs no attempt. Where
tether cannot tell, it cancels: nothing is left generating on a guess.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import final

import anyio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError

from ._cancel import log

__all__ = ["NextAttempt"]

_ASK_TIMEOUT = 5.0  # seconds a "not found" may wait for Temporal to say if the workflow runs


@final
class NextAttempt:
    """What an attempt knows of the next one: ``activity.info()`` and tether's deadline."""

    __slots__ = ("_ends_at", "_info")

    def __init__(self, info: activity.Info) -> None:
        self._info = info
        self._ends_at = math.inf  # when tether's own deadline (the stream's) fires

    def start(self, left: float | None) -> None:
        """The block starts; tether's deadline fires in *left* seconds (``None``: never)."""
        if left is not None:
            self._ends_at = anyio.current_time() + left

    async def follows(self, exc: BaseException | None) -> bool:
        """Whether Temporal runs another attempt after *exc* leaves the block. Never raises."""
        try:
            return await self._follows(exc)
        except Exception as problem:  # a bug must not turn a stop into a leak, nor mask exc
            log.warning("tether.temporal: could not tell if a retry follows: %r", problem)
            return False

    async def _follows(self, exc: BaseException | None) -> bool:
        if exc is None or isinstance(exc, GeneratorExit):
            return False  # the block ended: the activity goes on, its response stops
        if not self._attempts_left():
            return False
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            details = activity.cancellation_details()
            if details is None:  # not Temporal: tether's deadline, or the user's own scope
                return anyio.current_time() >= self._ends_at and self._retried("DeadlineExceeded")
            if details.cancel_requested:
                return False  # the workflow asked: stop the model
            if details.not_found and not (
                details.worker_shutdown or details.paused or details.reset or details.timed_out
            ):
                return await self._workflow_running()
            return True  # worker shutdown, pause, reset, timeout: Temporal retries the attempt
        if isinstance(exc, ApplicationError):
            return not exc.non_retryable and self._retried(exc.type or type(exc).__name__)
        return self._retried(type(exc).__name__)

    def _attempts_left(self) -> bool:
        info = self._info
        policy = info.retry_policy
        if policy is not None and 0 < policy.maximum_attempts <= info.attempt:
            return False
        if info.schedule_to_close_timeout:
            ends = info.scheduled_time + info.schedule_to_close_timeout
            if datetime.now(timezone.utc) >= ends:
                return False
        return True

    def _retried(self, error_type: str) -> bool:
        policy = self._info.retry_policy
        return policy is None or error_type not in (policy.non_retryable_error_types or ())

    async def _workflow_running(self) -> bool:
        """Ask Temporal (bounded): a closed workflow runs no attempt, a running one does."""
        info = self._info
        if info.workflow_id is None:
            return False
        try:
            client = activity.client()
        except RuntimeError:  # a test environment without a client: it retries nothing
            return False
        handle = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_ASK_TIMEOUT):
            status = (await handle.describe()).status
            return status is WorkflowExecutionStatus.RUNNING
        log.warning(
            "tether.temporal: Temporal did not say within %ss if workflow %s still runs: "
            "its response is cancelled",
            _ASK_TIMEOUT,
            info.workflow_id,
        )
        return False
