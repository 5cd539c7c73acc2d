"""The cancel protocol of guarded_stream, against the emulator's ledger, on asyncio and trio."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

import tether
from tests._http import httpx2
from tests.support import Boom, read_deltas, requests_in_flight, settled
from tether._build import StreamOptions, build_guard
from tether._lifecycle import TRANSITIONS, IllegalTransition, State, check_transition
from tether._protocol import ResponseGuard

if TYPE_CHECKING:
    from tether.testing import ResponsesEmulator


# ----------------------------------------------------------------- finishing


async def test_completed_stream_is_never_cancelled(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        async for _ in stream:
            pass
    assert stream.outcome.reason == "completed"
    assert stream.outcome.receipt is None
    assert emulator.ledger[stream.response_id].cancel_calls == 0


async def test_response_id_is_known_before_the_body_runs(client: openai.AsyncOpenAI) -> None:
    guarded = tether.guarded_stream(client, model="fast", input="hi")
    assert guarded.response_id is None
    async with guarded as stream:
        assert stream.response_id is not None
        assert stream.response_id.startswith("resp_")
        first = await stream.__anext__()
        assert first.type == "response.created"
        assert first.response.id == stream.response_id
        await stream.get_final_response()


async def test_get_final_response_equals_the_server_copy(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        response = await stream.get_final_response()
    stored = await client.responses.retrieve(response.id)
    assert response.output_text == stored.output_text
    assert response.status == "completed"
    assert stream.outcome.usage is not None
    assert stream.outcome.usage.output_tokens == emulator.ledger[response.id].tokens_generated


async def test_text_deltas_spell_the_final_text(client: openai.AsyncOpenAI) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        text = "".join([delta async for delta in stream.text_deltas()])
        response = await stream.get_final_response()
    assert text == response.output_text


# ------------------------------------------------------------- early exits


async def test_break_cancels_the_response_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 3)
    record = await settled(emulator, stream.response_id)
    assert record.status == "cancelled"
    assert stream.outcome.reason == "break"
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"


async def test_exception_in_the_body_propagates_unchanged(client: openai.AsyncOpenAI) -> None:
    boom = Boom("mine")
    with pytest.raises(Boom) as caught:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
            raise boom
    assert caught.value is boom
    assert stream.outcome.reason == "exception"


async def test_exception_in_the_body_cancels_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(Boom):
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
            raise Boom
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


async def test_cancelled_scope_sees_its_cancellation(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with anyio.CancelScope() as outer:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 2)
            outer.cancel()
            await read_deltas(stream, 100)
    assert outer.cancelled_caught
    assert stream.outcome.reason == "scope_cancelled"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


async def test_move_on_after_deadline_is_reported_as_deadline(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with anyio.move_on_after(60) as outer:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 2)
            outer.deadline = anyio.current_time()  # the deadline passes now
            await read_deltas(stream, 100)
    assert outer.cancelled_caught
    assert stream.outcome.reason == "deadline"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


async def test_fail_after_still_raises_timeout_error(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(TimeoutError):
        with anyio.fail_after(60) as outer:
            async with tether.guarded_stream(client, model="slow", input="hi") as stream:
                await read_deltas(stream, 2)
                outer.deadline = anyio.current_time()
                await read_deltas(stream, 100)
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


async def test_keyboard_interrupt_cancels_and_propagates(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(KeyboardInterrupt):
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
            raise KeyboardInterrupt
    assert stream.outcome.reason == "interrupted"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


# ---------------------------------------------------------------- the scope


async def test_scope_deadline_cancels_live_streams_and_raises_timeout_error(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded):
        async with tether.open_scope(client, deadline=1.0) as scope:
            guarded = tether.guarded_stream(scope, model="slow", input="hi")
            async with guarded as stream:
                await read_deltas(stream, 10_000)
    assert guarded.outcome.reason == "deadline"
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"
    assert scope.outcomes == (guarded.outcome,)


async def test_scope_cancel_exits_quietly_after_the_server_cancel(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
            await read_deltas(stream, 2)
            assert scope.live == 1
            scope.cancel()
            await read_deltas(stream, 100)
    assert scope.live == 0
    assert stream.outcome.reason == "scope_cancelled"
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"


async def test_cancel_before_created_waits_for_the_id_and_cancels_it(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    body_ran = False
    streams: list[tether.GuardedStream] = []

    async def open_one(cancel_scope: anyio.CancelScope) -> None:
        nonlocal body_ran
        with cancel_scope:
            guarded = tether.guarded_stream(client, model="slow", input="hi")
            streams.append(guarded)
            async with guarded:
                body_ran = True

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            opening = anyio.CancelScope()
            tg.start_soon(open_one, opening)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            opening.cancel()  # before response.created was sent
            hold.release()
    assert not body_ran
    (stream,) = streams
    record = await settled(emulator, stream.response_id)
    assert record.status == "cancelled"


# --------------------------------------------------------- explicit cancel (PR #2916)


async def test_cancel_calls_the_endpoint_with_the_response_id(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
        receipt = await stream.cancel()
    assert receipt.response_id == stream.response_id
    assert receipt.kind == "server"
    assert receipt.status == "cancelled"
    assert emulator.ledger[stream.response_id].cancel_calls == 1
    assert stream.outcome.reason == "explicit"


async def test_iteration_ends_after_cancel(client: openai.AsyncOpenAI) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
        await stream.cancel()
        assert [event async for event in stream] == []


async def test_cancel_twice_returns_the_same_receipt(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        first = await stream.cancel()
        second = await stream.cancel()
    assert first is second
    assert emulator.ledger[stream.response_id].cancel_calls == 1


async def test_stream_is_closed_after_cancel(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
        await stream.cancel()
        assert requests_in_flight(client) == 0
    response_id = stream.response_id
    await emulator.wait_for(lambda ledger: ledger[response_id].listeners == 0)


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace and the response runs on"
)
async def test_stream_is_closed_even_when_the_cancel_fails(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="hanging-cancel", input="hi", grace=0.2) as s:
        await read_deltas(s, 1)
        receipt = await s.cancel()
        assert requests_in_flight(client) == 0
    assert receipt.status is None
    assert receipt.error is not None
    assert "grace" in receipt.error


async def test_cancel_after_completion_sends_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        await stream.get_final_response()
        receipt = await stream.cancel()
    assert receipt.kind == "none"
    assert receipt.status == "completed"
    assert emulator.ledger[stream.response_id].cancel_calls == 0
    assert stream.outcome.reason == "explicit"


async def test_cancel_from_another_task_interrupts_the_reader(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    receipts: list[tether.CancelReceipt] = []
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        async with anyio.create_task_group() as tg:

            async def stop_button() -> None:
                await emulator.wait_for(
                    lambda ledger: ledger[stream.response_id].tokens_generated >= 2
                )
                receipts.append(await stream.cancel())

            tg.start_soon(stop_button)
            async for _ in stream:  # ends when the other task cancels
                pass
    assert receipts[0].status == "cancelled"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


# ------------------------------------------------------------------- faults


async def test_cancel_retries_5xx_then_confirms(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="flaky-cancel", input="hi") as stream:
        await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert receipt.status == "cancelled"
    assert receipt.attempts == 3
    assert emulator.ledger[stream.response_id].cancel_statuses == [500, 500, 200]


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace and the response runs on"
)
async def test_hanging_cancel_is_bounded_by_grace(client: openai.AsyncOpenAI) -> None:
    with anyio.move_on_after(10) as watchdog:
        async with tether.guarded_stream(
            client, model="hanging-cancel", input="hi", grace=0.2
        ) as s:
            await read_deltas(s, 1)
    assert not watchdog.cancel_called
    assert s.outcome.receipt is not None
    assert s.outcome.receipt.status is None
    assert s.outcome.cleanup_error is not None


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace and the response runs on"
)
async def test_cleanup_failure_does_not_mask_the_exception(client: openai.AsyncOpenAI) -> None:
    boom = Boom("mine")
    with pytest.raises(Boom) as caught:
        async with tether.guarded_stream(
            client, model="hanging-cancel", input="hi", grace=0.2
        ) as s:
            await read_deltas(s, 1)
            raise boom
    assert caught.value is boom
    assert s.outcome.cleanup_error is not None
    if sys.version_info >= (3, 11):
        assert any("tether" in note for note in caught.value.__notes__)


async def test_pool_of_one_connection_does_not_deadlock(emulator: ResponsesEmulator) -> None:
    http = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1))
    async with emulator.async_client(http_client=http) as client:
        with anyio.move_on_after(10) as watchdog:
            async with tether.guarded_stream(client, model="slow", input="hi") as stream:
                await read_deltas(stream, 1)
        assert not watchdog.cancel_called
        assert stream.outcome.receipt is not None
        assert stream.outcome.receipt.status == "cancelled"
        assert requests_in_flight(client) == 0


async def test_lost_connection_resumes_without_loss_or_duplication(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="dropping", input="hi") as stream:
        sequence = [event.sequence_number async for event in stream]
    assert sequence == list(range(len(sequence)))
    assert stream.outcome.resumes == 1
    assert stream.outcome.reason == "completed"
    assert len(sequence) == len(emulator.ledger[stream.response_id].events)


async def test_nested_error_event_raises_and_the_receipt_reads_failed(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.APIError):
        async with tether.guarded_stream(client, model="nested-error", input="hi") as stream:
            async for _ in stream:
                pass
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert receipt.status == "failed"


async def test_flat_error_event_is_yielded_and_the_stream_ends_failed(
    client: openai.AsyncOpenAI,
) -> None:
    async with tether.guarded_stream(client, model="flat-error", input="hi") as stream:
        kinds = [event.type async for event in stream]
    assert "error" in kinds
    assert stream.outcome.reason == "failed"
    assert stream.outcome.receipt is None


async def test_response_cancelled_elsewhere_ends_the_stream(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
        async with emulator.async_client() as other:
            await other.responses.cancel(stream.response_id or "")
        async for _ in stream:
            pass
    assert stream.outcome.reason == "cancelled"
    assert stream.outcome.status == "cancelled"


# -------------------------------------------------------------------- stalls


async def test_first_token_timeout_cancels_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(tether.StallError) as caught:
        async with tether.guarded_stream(
            client, model="silent", input="hi", first_token_timeout=0.2
        ) as stream:
            async for _ in stream:
                pass
    assert caught.value.kind == "first_token"
    assert isinstance(caught.value, TimeoutError)
    assert stream.outcome.reason == "stalled"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


async def test_idle_timeout_cancels_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(tether.StallError) as caught:
        async with tether.guarded_stream(
            client, model="trickle", input="hi", idle_timeout=0.2
        ) as s:
            async for _ in s:
                pass
    assert caught.value.kind == "idle"
    assert (await settled(emulator, s.response_id)).status == "cancelled"


# ----------------------------------------------------------- non-background


async def test_non_background_stream_is_stopped_by_disconnecting(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi", background=False) as s:
        await read_deltas(s, 1)
    receipt = s.outcome.receipt
    assert receipt is not None
    assert receipt.kind == "disconnect"
    record = await settled(emulator, s.response_id)
    assert record.cancel_calls == 0
    assert record.stopped_by == "disconnect"


# ------------------------------------------------------------ detach, resume


async def test_detach_leaves_the_response_running(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 2)
        handle = await stream.detach()
    assert stream.outcome.reason == "detached"
    assert stream.outcome.receipt is None
    assert emulator.ledger[handle.response_id].generating
    await client.responses.cancel(handle.response_id)  # clean up after ourselves


async def test_resume_continues_after_the_handle_without_gap(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="dropping", input="hi") as stream:
        await read_deltas(stream, 2)
        handle = await stream.detach()
    assert handle.last_sequence_number is not None
    async with tether.resume(client, handle) as resumed:
        sequence = [event.sequence_number async for event in resumed]
    assert sequence[0] == handle.last_sequence_number + 1
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    assert resumed.outcome.reason == "completed"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"grace": 0}, ValueError, "grace"),
        ({"grace": -1.0}, ValueError, "grace"),
        ({"deadline": -5}, ValueError, "deadline"),
        ({"deadline": float("nan")}, ValueError, "deadline"),
        ({"first_event_timeout": 0}, ValueError, "first_event_timeout"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"grace": "5"}, TypeError, "grace"),
    ],
)
async def test_open_scope_rejects_bad_arguments_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    kwargs: dict[str, Any],
    error: type[Exception],
    argument: str,
) -> None:
    with pytest.raises(error, match=argument):
        async with tether.open_scope(client, **kwargs):
            pass
    assert emulator.ledger.requests == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"model": "fast", "input": "hi", "stream": False}, ValueError, "stream"),
        ({"model": "fast", "input": "hi", "background": "yes"}, TypeError, "background"),
        ({"model": "fast", "input": "hi", "idle_timeout": 0}, ValueError, "idle_timeout"),
        ({"model": "fast", "input": "hi", "first_token_timeout": -1}, ValueError, "first_token"),
        ({"input": "hi"}, TypeError, "model"),
    ],
)
async def test_guarded_stream_rejects_bad_arguments_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    kwargs: dict[str, Any],
    error: type[Exception],
    argument: str,
) -> None:
    with pytest.raises(error, match=argument):
        tether.guarded_stream(client, **kwargs)
    assert emulator.ledger.requests == 0


async def test_sync_client_is_refused_with_a_pointer_to_tether_sync(
    emulator: ResponsesEmulator,
) -> None:
    with emulator.client() as sync_client, pytest.raises(TypeError, match=r"tether\.sync"):
        tether.guarded_stream(sync_client, model="fast", input="hi")  # type: ignore[arg-type]
    assert emulator.ledger.requests == 0


async def test_unknown_model_error_propagates_and_leaves_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError):
        async with tether.guarded_stream(client, model="no-such-model", input="hi"):
            pass
    assert emulator.ledger.orphans() == []


async def test_cancel_from_another_task_while_opening_waits_for_the_id(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Regression: cancel() during __aenter__ used to return an empty receipt, no cancel sent."""
    guarded = tether.guarded_stream(client, model="slow", input="hi")
    receipts: list[tether.CancelReceipt] = []

    async def opener() -> None:
        async with guarded as stream:
            async for _ in stream:  # ends once the other task cancelled
                pass

    async def stop_button() -> None:
        receipts.append(await guarded.cancel())

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            tg.start_soon(stop_button)
            await anyio.wait_all_tasks_blocked()
            hold.release()
    assert receipts[0].status == "cancelled"
    assert receipts[0].response_id == guarded.response_id
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"
    assert guarded.outcome.reason == "explicit"


async def test_cancel_before_entering_is_an_error(client: openai.AsyncOpenAI) -> None:
    guarded = tether.guarded_stream(client, model="fast", input="hi")
    with pytest.raises(RuntimeError, match="open stream"):
        await guarded.cancel()


# ----------------------------------------------------------------- the lifecycle (State)


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[State]]:
    """Every state each guard moves to, by guard, in order (``ResponseGuard._to`` recorded)."""
    seen: dict[int, list[State]] = {}
    original = ResponseGuard._to

    def recording(guard: ResponseGuard, new: State) -> None:
        original(guard, new)
        seen.setdefault(id(guard), []).append(new)

    monkeypatch.setattr(ResponseGuard, "_to", recording)
    return seen


OPENED = [State.QUEUED, State.ADMITTED, State.SENDING, State.OPEN]
STOPPED = [State.STOPPING, State.STOPPED, State.FINISHED]


async def test_a_completed_stream_goes_through_every_state_from_queued_to_finished(
    client: openai.AsyncOpenAI, transitions: dict[int, list[State]]
) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        async for _ in stream:
            pass
    assert list(transitions.values()) == [[*OPENED, State.EXHAUSTED, *STOPPED]]
    assert stream._guard.state is State.FINISHED


async def test_a_break_stops_an_open_stream_that_is_not_exhausted(
    client: openai.AsyncOpenAI, transitions: dict[int, list[State]]
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
    assert list(transitions.values()) == [[*OPENED, *STOPPED]]
    assert not stream._guard.exhausted
    assert stream._guard.request_sent


async def test_a_resume_goes_from_admitted_to_open_without_sending_a_create(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI, transitions: dict[int, list[State]]
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
        handle = await stream.detach()
    transitions.clear()
    async with tether.resume(client, handle) as resumed:
        await read_deltas(resumed, 1)
    assert list(transitions.values()) == [[State.QUEUED, State.ADMITTED, State.OPEN, *STOPPED]]
    assert len(emulator.ledger.responses) == 1


async def test_a_stream_cancelled_while_queued_for_a_slot_stops_from_queued_and_sent_nothing(
    client: openai.AsyncOpenAI, transitions: dict[int, list[State]]
) -> None:
    async with tether.open_scope(client, max_concurrency=1) as scope:
        async with tether.guarded_stream(scope, model="slow", input="a") as first:
            await read_deltas(first, 1)
            queued = tether.guarded_stream(scope, model="slow", input="b")
            async with anyio.create_task_group() as tg:

                async def owner() -> None:
                    async with queued:
                        pass  # pragma: no cover - a cancelled queued stream never opens

                tg.start_soon(owner)
                await anyio.wait_all_tasks_blocked()
                assert queued._guard.state is State.QUEUED
                assert scope.live == 1  # not admitted: not counted
                await queued.cancel()
    assert transitions[id(queued._guard)] == [State.QUEUED, *STOPPED]
    assert not queued._guard.request_sent


async def test_a_stop_that_finds_no_free_cancel_slot_waits_in_cancel_queued(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    transitions: dict[int, list[State]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 1)
    both_open = anyio.Event()
    opened = 0

    async def one(scope: tether.Scope) -> None:
        nonlocal opened
        async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
            opened += 1
            if opened == 2:
                both_open.set()
            async for _ in stream:
                pass

    async with tether.open_scope(client, grace=10) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, scope)
            tg.start_soon(one, scope)
            await both_open.wait()
            with emulator.hold("cancel"), anyio.CancelScope(shield=True):
                scope.cancel()
                await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
                await anyio.wait_all_tasks_blocked()  # the other stop queues behind it
    paths = sorted(transitions.values())
    assert paths == [  # sorted: CANCEL_QUEUED comes before STOPPED
        [*OPENED, State.STOPPING, State.CANCEL_QUEUED, State.STOPPED, State.FINISHED],
        [*OPENED, *STOPPED],
    ]
    assert [r.status for r in emulator.ledger] == ["cancelled"] * 2


async def test_an_illegal_transition_of_a_guard_fails_loudly_and_names_both_states(
    client: openai.AsyncOpenAI,
) -> None:
    guard = build_guard(client, StreamOptions(), {"model": "fast", "input": "hi"})
    with pytest.raises(IllegalTransition, match="from NEW to OPEN"):
        guard._to(State.OPEN)
    assert guard.state is State.NEW


def test_every_state_is_reachable_and_only_finished_is_final() -> None:
    reached = {State.NEW}
    frontier = [State.NEW]
    while frontier:
        for new in TRANSITIONS[frontier.pop()]:
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(State)
    assert [state for state in State if not TRANSITIONS[state]] == [State.FINISHED]


def test_a_stop_is_legal_from_every_state_before_it_and_from_none_after() -> None:
    for state in State:
        if state < State.STOPPING:
            check_transition(state, State.STOPPING)
        else:
            with pytest.raises(IllegalTransition):
                check_transition(state, State.STOPPING)


def test_the_states_move_forward_only() -> None:
    assert all(new > old for old, targets in TRANSITIONS.items() for new in targets)
