"""ResponseCanceller: the activity that cancels a response by id, and the workflow's call.

What a dead worker left generating is cancelled from the workflow, which survives it:
``cancel_from_failure`` reads the failure's last heartbeat (``Checkpoint``) in workflow
code and runs the ``tether.cancel_response`` activity for each response that may still
be generating. Public as ``tether.temporal.ResponseCanceller``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, final

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from ._cancel import cancel_on_server
from ._scope import Scope, as_scope
from ._temporal_checkpoint import CANCEL_ACTIVITY, checkpoints_from_failure
from ._validate import check_positive

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["ResponseCanceller"]


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
