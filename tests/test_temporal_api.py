"""tether.temporal without Temporal's event loop: on both backends.

What needs a real worker (heartbeats, cancels, retries) is in tests/test_temporal.py,
asyncio only.
"""

from __future__ import annotations

import openai
import pytest
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

import tether
import tether.temporal
from tether.temporal import Checkpoint
from tether.testing import ResponsesEmulator


async def test_outside_an_activity_raises_not_in_activity_before_any_request(
    client: openai.AsyncOpenAI, emulator: ResponsesEmulator
) -> None:
    with pytest.raises(tether.temporal.NotInActivity, match=r"use tether\.guarded_stream\(\)"):
        tether.temporal.guarded_stream(client, model="fast", input="hi")
    assert emulator.ledger.requests == 0


async def test_run_agent_outside_an_activity_raises_not_in_activity_before_any_request(
    client: openai.AsyncOpenAI, emulator: ResponsesEmulator
) -> None:
    with pytest.raises(tether.temporal.NotInActivity, match=r"use tether\.run_agent\(\)"):
        await tether.temporal.run_agent(client, model="fast", input="hi", tools=[])
    assert emulator.ledger.requests == 0


def test_not_in_activity_is_a_tether_error_and_a_runtime_error() -> None:
    assert issubclass(tether.temporal.NotInActivity, tether.TetherError)
    assert issubclass(tether.temporal.NotInActivity, RuntimeError)


def test_checkpoint_round_trips_through_its_heartbeat_detail() -> None:
    point = Checkpoint(response_id="resp_1", sequence_number=7)
    assert point.to_detail() == {
        "tether": 2,
        "streams": [{"response_id": "resp_1", "sequence_number": 7}],
    }
    assert Checkpoint.from_details([point.to_detail(), "mine"]) == point


def test_checkpoint_of_the_first_format_is_read_as_the_activity_s_only_stream() -> None:
    """The first cut heartbeated one stream's keys at the top level (format 1)."""
    detail = {"tether": 1, "response_id": "resp_1", "sequence_number": 7, "stopped": True}
    point = Checkpoint(response_id="resp_1", sequence_number=7, stopped=True)
    assert Checkpoint.all_from_details([detail]) == (point,)


def test_every_stream_s_checkpoint_is_read_in_the_order_the_activity_opened_them() -> None:
    first = Checkpoint(response_id="resp_a", sequence_number=80, finished=True)
    second = Checkpoint(response_id="resp_b", sequence_number=41)
    detail = {
        "tether": 2,
        "streams": [
            {"response_id": "resp_a", "sequence_number": 80, "finished": True},
            None,
            {"response_id": "resp_b", "sequence_number": 41},
        ],
    }
    assert Checkpoint.all_from_details([detail, "mine"]) == (first, None, second)


def test_checkpoint_from_details_is_the_last_stream_s() -> None:
    detail = {"tether": 2, "streams": [{"response_id": "resp_a"}, {"response_id": "resp_b"}]}
    last = Checkpoint(response_id="resp_b", sequence_number=None)
    assert Checkpoint.from_details([detail]) == last


@pytest.mark.parametrize(
    "details",
    [
        [],
        ["mine"],
        [{"response_id": "resp_1"}],
        [{"tether": 2, "response_id": "resp_1"}],
        [{"tether": 3, "streams": [{"response_id": "resp_1"}]}],
        [{"tether": 2, "streams": [None, {"response_id": ""}]}],
        [{"tether": 1}],
    ],
)
def test_details_that_are_not_a_checkpoint_give_none(details: list[object]) -> None:
    assert Checkpoint.from_details(details) is None


def test_resume_failed_is_a_non_retryable_application_error() -> None:
    error = tether.temporal.ResumeFailed("resp_1", "cancelled")
    assert isinstance(error, ApplicationError)
    assert isinstance(error, tether.TetherError)
    assert error.non_retryable
    assert error.type == "ResumeFailed"
    assert "resp_1 is cancelled" in str(error)


def _activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="essay",
        activity_id="1",
        retry_state=RetryState.TIMEOUT,
    )
    error.__cause__ = cause
    return error


def test_checkpoint_from_failure_reads_a_timeouts_last_heartbeat_details() -> None:
    point = Checkpoint(response_id="resp_9", sequence_number=None)
    timeout = TimeoutError(
        "heartbeat", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[point.to_detail()]
    )
    assert tether.temporal.Checkpoint.from_failure(_activity_error(timeout)) == point


def test_checkpoint_from_failure_is_the_last_stream_s() -> None:
    detail = {"tether": 2, "streams": [{"response_id": "resp_a"}, {"response_id": "resp_b"}]}
    cancelled = CancelledError("cancelled", detail, "mine")
    point = Checkpoint.from_failure(_activity_error(cancelled))
    assert point == Checkpoint(response_id="resp_b", sequence_number=None)


def test_checkpoint_from_failure_without_heartbeat_details_gives_none() -> None:
    failure = _activity_error(ApplicationError("boom"))
    assert tether.temporal.Checkpoint.from_failure(failure) is None


def test_checkpoint_of_a_response_its_attempt_stopped_round_trips_as_stopped() -> None:
    point = Checkpoint(response_id="resp_1", sequence_number=4, stopped=True)
    detail = point.to_detail()
    assert detail["streams"][0]["stopped"] is True
    assert Checkpoint.from_details([detail]) == point


def test_checkpoint_without_the_stopped_key_is_not_stopped() -> None:
    entry = {"response_id": "resp_1", "sequence_number": None}
    point = Checkpoint.from_details([{"tether": 2, "streams": [entry]}])
    assert point is not None
    assert point.stopped is False


def test_checkpoint_of_a_finished_response_round_trips_as_finished() -> None:
    point = Checkpoint(response_id="resp_1", sequence_number=4, finished=True)
    detail = point.to_detail()
    assert detail["streams"][0]["finished"] is True
    assert Checkpoint.from_details([detail]) == point
