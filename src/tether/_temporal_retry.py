"""Whether Temporal runs another attempt that resumes this response: then it is left for it.

A background response belongs to the activity, not to one attempt of it. When the guard of
``tether.temporal.guarded_stream`` closes early (its block is left, or its open is cut
short), its ``handover`` hook (set by ``TemporalStream``) asks ``NextAttempt`` whether
another attempt will resume the response; if so, the stream is *handed over*: closed, not
cancelled (outcome reason ``detached``). Otherwise it is cancelled on the server, as
``tether.guarded_stream`` does. Cancelling a response that a next attempt was going to
resume would make that attempt fail (``ResumeFailed``, non-retryable) or pay for the
response twice (``on_lost="restart"``).

Only an ending Temporal imposes on the attempt hands over: the attempt is over whatever the
code does, and Temporal decides what follows. Two questions, both answered from what
Temporal itself decides on:

1. Will Temporal run another attempt? Yes when this one ends by a worker shutdown, a
   pause or a timeout (the cancellation's details), or by tether's own
   deadline at the attempt's start-to-close (the server times the attempt out at that
   moment); and attempts are left (fewer than ``maximum_attempts``, before the
   schedule-to-close deadline). A workflow's cancel request stops the response; so does an
   activity reset (the reset attempt may or may not get the heartbeat's details back, as
   the operator chose, and the attempt is not told: handed over, the response would run
   on unresumed when they are cleared); so does whatever the code itself does: a normal exit, a ``break``, an exception (the code may
   catch it outside the block and complete the activity: no retry would come), a cancel
   scope of its own, ``deadline=``. A retry after such a stop starts a new response: the
   attempt's last heartbeat marks its checkpoint ``stopped``.
2. Will that attempt find this response? Only if Temporal holds a checkpoint naming it:
   known when this attempt resumed it (its ``heartbeat_details`` named it), asked of
   Temporal otherwise (the workflow runs, and the pending activity's last heartbeat names
   it, read with ``describe()``; bounded): a new response whose first heartbeat had not
   reached Temporal, or an attempt told "not found" whose workflow has closed
   (terminated), has no successor to resume it.

Where tether cannot tell (no client, no answer in time, an error), it cancels: a response
is never left generating on a guess.
"""

from __future__ import annotations

import contextvars
import math
from datetime import datetime, timedelta, timezone
from typing import Any, final

import anyio
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import CancelledError

from ._cancel import log
from ._temporal_checkpoint import Checkpoint

__all__ = ["NextAttempt"]

_ASK_TIMEOUT = 5.0
"""Seconds tether waits for Temporal to show a checkpoint naming the response."""
_ASK_EVERY = 0.1
"""Seconds between two looks: the first heartbeat's RPC may still be on its way."""
_RETRY_MARGIN = timedelta(seconds=1)
"""How close to the schedule-to-close deadline no retry is counted on (tether's deadline
there fires on the monotonic clock, the deadline is read on the wall clock)."""


@final
class NextAttempt:
    """What an attempt knows of the next one: ``activity.info()`` and tether's deadline.

    Made in the activity's context and asked on the stream's loop, which in a sync activity
    runs in another thread: the context is kept (``contextvars.copy_context``) and what
    ``activity`` says is read in it.
    """

    __slots__ = ("_attempt_left", "_context", "_ends_at", "_info")

    def __init__(self, info: activity.Info, attempt_left: float | None) -> None:
        self._info = info
        self._attempt_left = attempt_left  # seconds until the server ends the attempt
        self._ends_at = math.inf
        self._context = contextvars.copy_context()  # the activity's, for any thread

    def start(self) -> None:
        """The block starts: from now, tether's deadline fires at the attempt's end (unless
        ``deadline=`` fires first)."""
        if self._attempt_left is not None:
            self._ends_at = anyio.current_time() + self._attempt_left

    async def resumes(
        self, exc: BaseException | None, response_id: str | None, *, checkpoint: bool | None
    ) -> bool:
        """Whether a next attempt resumes *response_id* after *exc* leaves the block.

        *checkpoint*: whether Temporal holds one naming it: True when this attempt resumed
        it, False when no heartbeat named it yet, None when one was sent (ask). Never raises.
        """
        try:
            follows = self._follows(exc)
            if follows is False or response_id is None or checkpoint is False:
                return False
            if checkpoint and follows:
                return True
            return await self._checkpoint_recorded(response_id)
        except Exception as problem:  # a bug must not turn a stop into a leak, nor mask exc
            log.warning("tether.temporal: could not tell if a retry resumes: %r", problem)
            return False

    def _follows(self, exc: BaseException | None) -> bool | None:
        """True: another attempt follows; None: if the workflow still runs; False: none."""
        cancelled = (anyio.get_cancelled_exc_class(), CancelledError)  # a sync activity's
        if not isinstance(exc, cancelled) or not self._attempts_left():
            return False  # the code ended the block (it may go on): stop the response
        details = self._context.run(activity.cancellation_details)
        if details is None and isinstance(exc, CancelledError):
            return False  # raised by the code itself, not by Temporal
        if details is None:  # not Temporal: tether's deadline, or a scope of the code's own
            return anyio.current_time() >= self._ends_at  # the attempt's end: it times out
        if details.cancel_requested:
            return False  # the workflow asked: stop the model
        if details.reset:  # restarted; whether the checkpoint survives is not said: stop
            return False
        if details.not_found and not (
            details.worker_shutdown or details.paused or details.timed_out
        ):
            return None  # the attempt timed out, or the workflow closed: ask
        return True  # worker shutdown, pause, timeout: Temporal retries the attempt

    def _attempts_left(self) -> bool:
        info = self._info
        policy = info.retry_policy
        if policy is not None and 0 < policy.maximum_attempts <= info.attempt:
            return False
        if info.schedule_to_close_timeout:  # no retry starts this close to its end
            ends = info.scheduled_time + info.schedule_to_close_timeout
            if datetime.now(timezone.utc) + _RETRY_MARGIN >= ends:
                return False
        return True

    async def _checkpoint_recorded(self, response_id: str) -> bool:
        """Whether Temporal's last heartbeat of this activity names *response_id* (bounded).

        The pending activity is gone once its workflow closed. Its first heartbeat may still
        be on its way: looked at again until ``_ASK_TIMEOUT``.
        """
        info = self._info
        if info.workflow_id is None:
            return False
        try:
            client = self._context.run(activity.client)
        except RuntimeError:  # a sync activity, a test environment: no client to ask
            return False
        handle = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_ASK_TIMEOUT):
            while True:
                description = await handle.describe()
                if description.status is not WorkflowExecutionStatus.RUNNING:
                    return False  # closed (terminated, timed out...): no attempt follows
                pending = description.raw_description.pending_activities
                mine = [p for p in pending if p.activity_id == info.activity_id]
                if not mine:
                    return False  # the workflow gave the activity up
                payloads: Any = mine[0].heartbeat_details.payloads
                details = await client.data_converter.decode(payloads) if payloads else []
                named = Checkpoint.all_from_details(details)
                if any(point is not None and point.response_id == response_id for point in named):
                    return True
                await anyio.sleep(_ASK_EVERY)
        log.warning(
            "tether.temporal: Temporal showed no checkpoint of %s within %ss: it is cancelled",
            response_id,
            _ASK_TIMEOUT,
        )
        return False
