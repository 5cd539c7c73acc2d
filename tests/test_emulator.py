"""The emulator's behaviour: orphans, cancel semantics, resume, faults, holds, the ledger.

Tests synchronise on `emu.wait_for` (woken by every ledger change), never on sleeps.
Early exits from a stream use the sync SDK in a worker thread: an async SDK stream
left before its end leaves async generators unclosed, which trio reports as a
ResourceWarning (an error here).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

import tether.testing
from tests._http import httpx2
from tether._compat import STREAM_CONNECTION_ERRORS
from tether.testing import EmulatedModel, Faults, Ledger, ResponsesEmulator

ENDLESS = EmulatedModel(ttft=0.0, tokens_per_s=400.0, length=100_000)  # runs until stopped
FAST = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=20)


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    models = {
        "endless": ENDLESS,
        "fast": FAST,
        "cancel-fails": EmulatedModel(
            ttft=0.0, tokens_per_s=400.0, length=100_000, faults=Faults(cancel_failures=2)
        ),
        "cancel-hangs": EmulatedModel(
            ttft=0.0, tokens_per_s=400.0, length=100_000, faults=Faults(cancel_hangs=True)
        ),
        "drops": EmulatedModel(
            ttft=0.0, tokens_per_s=2000.0, length=60, faults=Faults(drop_after=6)
        ),
        "drops-endless": EmulatedModel(
            ttft=0.0, tokens_per_s=400.0, length=100_000, faults=Faults(drop_after=4)
        ),
    }
    with ResponsesEmulator(models=models, seed=1) as emulator:
        yield emulator


def read_then_close(emu: ResponsesEmulator, count: int, **create: Any) -> list[Any]:
    """Open a stream with the sync SDK, read `count` events, close the connection."""
    events: list[Any] = []
    with emu.client(max_retries=0) as client:
        stream = client.responses.create(input="Write an essay", stream=True, **create)
        for event in stream:
            events.append(event)
            if len(events) == count:
                break
        stream.close()
    return events


async def open_and_drop(emu: ResponsesEmulator, count: int = 5, **create: Any) -> str:
    """Read a few events of a new stream in a worker thread, then drop it; its id."""
    events = await anyio.to_thread.run_sync(
        functools.partial(read_then_close, emu, count, **create)
    )
    return events[0].response.id


async def test_background_stream_keeps_generating_after_its_client_disconnects(
    emu: ResponsesEmulator,
) -> None:
    """The bug tether fixes: closing the connection does not stop a background response."""
    rid = await open_and_drop(emu, model="endless", background=True)
    record = emu.ledger[rid]
    await emu.wait_for(lambda _: record.listeners == 0)
    assert record in emu.ledger.orphans()
    seen = record.tokens_generated
    await emu.wait_for(lambda _: record.tokens_generated >= seen + 20)
    assert record.status == "in_progress"
    assert record.stopped_by is None

    async with emu.async_client(max_retries=0) as client:
        cancelled = await client.responses.cancel(rid)
    assert cancelled.status == "cancelled"
    assert record.status == "cancelled"
    assert record.stopped_by == "cancel"
    assert record.cancel_statuses == [200]
    assert record not in emu.ledger.orphans()
    assert record.finished_at is not None
    stopped_at = record.tokens_generated
    async with emu.async_client(max_retries=0) as client:
        assert (await client.responses.retrieve(rid)).status == "cancelled"
    assert record.tokens_generated == stopped_at


async def test_non_background_stream_stops_when_its_client_disconnects(
    emu: ResponsesEmulator,
) -> None:
    """Without background, closing the connection is the cancel."""
    rid = await open_and_drop(emu, model="endless", background=False)
    record = emu.ledger[rid]
    await emu.wait_for(lambda _: record.status == "cancelled")
    assert record.stopped_by == "disconnect"
    assert not record.generating
    assert record not in emu.ledger.orphans()


async def test_cancel_ends_the_live_stream_cleanly(emu: ResponsesEmulator) -> None:
    """A stream being read just ends after a cancel: no more events, no error."""
    types: list[str] = []
    rid = ""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="endless", input="x", stream=True, background=True
        )
        async for event in stream:
            types.append(event.type)
            if event.type == "response.created":
                rid = event.response.id
            if types.count("response.output_text.delta") == 3:
                await client.responses.cancel(rid)
    record = emu.ledger[rid]
    assert record.status == "cancelled"
    assert types[-1] == "response.output_text.delta"
    assert len(types) == len(record.events)


async def test_resume_with_starting_after_replays_exactly_the_later_events(
    emu: ResponsesEmulator,
) -> None:
    """GET ?stream=true&starting_after=N replays events N+1.. with no gap or duplicate."""
    rid = await open_and_drop(emu, count=7, model="endless", background=True)
    record = emu.ledger[rid]
    await emu.wait_for(lambda _: record.tokens_generated >= 30)
    async with emu.async_client(max_retries=0) as client:
        resumed = await client.responses.retrieve(rid, stream=True, starting_after=6)
        numbers: list[int] = []
        async for event in resumed:
            numbers.append(event.sequence_number)
            if len(numbers) == 40:
                await client.responses.cancel(rid)
    assert numbers == list(range(7, 7 + len(numbers)))
    assert len(numbers) >= 40
    assert numbers[-1] == len(record.events) - 1


async def test_resume_after_a_dropped_connection_completes_the_response(
    emu: ResponsesEmulator,
) -> None:
    """drop_after cuts the first connection mid-body; resuming from the last event finishes."""

    def read_until_cut() -> tuple[str, int]:
        last = -1
        rid = ""
        with emu.client(max_retries=0) as client:
            stream = client.responses.create(model="drops", input="x", stream=True, background=True)
            with pytest.raises(STREAM_CONNECTION_ERRORS):
                for event in stream:
                    last = event.sequence_number
                    if event.type == "response.created":
                        rid = event.response.id
        return rid, last

    rid, last = await anyio.to_thread.run_sync(read_until_cut)
    assert last == 5
    async with emu.async_client(max_retries=0) as client:
        resumed = await client.responses.retrieve(rid, stream=True, starting_after=last)
        events = [event async for event in resumed]
    assert [e.sequence_number for e in events] == list(range(6, 6 + len(events)))
    assert events[-1].type == "response.completed"
    assert emu.ledger[rid].status == "completed"


async def test_dropped_background_stream_keeps_generating(emu: ResponsesEmulator) -> None:
    """A cut connection is an orphan maker too, until the response is cancelled."""

    def read_until_cut() -> str:
        rid = ""
        with emu.client(max_retries=0) as client:
            stream = client.responses.create(
                model="drops-endless", input="x", stream=True, background=True
            )
            with pytest.raises(STREAM_CONNECTION_ERRORS):
                for event in stream:
                    if event.type == "response.created":
                        rid = event.response.id
        return rid

    record = emu.ledger[await anyio.to_thread.run_sync(read_until_cut)]
    seen = record.tokens_generated
    await emu.wait_for(lambda _: record.tokens_generated > seen + 10 and record.listeners == 0)
    assert record in emu.ledger.orphans()
    async with emu.async_client(max_retries=0) as client:
        await client.responses.cancel(record.id)
    assert record.status == "cancelled"


async def test_cancelling_twice_answers_the_cancelled_response_both_times(
    emu: ResponsesEmulator,
) -> None:
    """Cancel is idempotent: the second call answers 200 with the same final state."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="endless", input="x", background=True)
        assert created.status == "queued"
        first = await client.responses.cancel(created.id)
        second = await client.responses.cancel(created.id)
    assert first.status == second.status == "cancelled"
    assert first.model_dump() == second.model_dump()
    assert emu.ledger[created.id].cancel_statuses == [200, 200]
    assert emu.ledger[created.id].cancel_calls == 2


async def test_cancel_after_completion_answers_400(emu: ResponsesEmulator) -> None:
    """A finished background response cannot be cancelled; its status stays completed."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="fast", input="x", background=True)
        record = emu.ledger[created.id]
        await emu.wait_for(lambda _: record.status == "completed")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel a completed response"):
            await client.responses.cancel(created.id)
    assert record.status == "completed"
    assert record.cancel_statuses == [400]


def test_cancel_of_a_non_background_response_answers_400(emu: ResponsesEmulator) -> None:
    """Only background responses can be cancelled."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x")
        with pytest.raises(openai.BadRequestError, match="background=true"):
            client.responses.cancel(response.id)


async def test_background_non_stream_create_answers_queued_then_completes(
    emu: ResponsesEmulator,
) -> None:
    """background=true without stream answers at once and generates with nobody listening."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="fast", input="x", background=True)
        assert created.status == "queued"
        await emu.wait_for(lambda ledger: ledger[created.id].status == "completed")
        final = await client.responses.retrieve(created.id)
    assert final.usage is not None
    assert final.usage.output_tokens == FAST.length
    assert emu.ledger[created.id].tokens_after_cancel == 0


async def test_cancel_failures_answer_500_then_the_cancel_lands(emu: ResponsesEmulator) -> None:
    """cancel_failures=2: two 500s (nothing cancelled, tokens keep coming), then 200."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="cancel-fails", input="x", background=True)
        record = emu.ledger[created.id]
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await client.responses.cancel(created.id)
        assert record.generating
        await emu.wait_for(lambda _: record.tokens_after_cancel >= 5)
        assert (await client.responses.cancel(created.id)).status == "cancelled"
    assert record.cancel_statuses == [500, 500, 200]
    assert record.cancel_requested_at is not None


async def test_hanging_cancel_stays_in_flight_until_the_client_gives_up(
    emu: ResponsesEmulator,
) -> None:
    """cancel_hangs: the call never answers; the response keeps generating."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="cancel-hangs", input="x", background=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.responses.cancel, created.id)
            await emu.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
            tg.cancel_scope.cancel()
        await emu.wait_for(lambda ledger: ledger.cancels_in_flight == 0)
        record = emu.ledger[created.id]
        assert record.generating
        assert record.cancel_statuses == []
        await emu.wait_for(lambda _: record.tokens_after_cancel > 0)
    emu.models["cancel-hangs-fixed"] = EmulatedModel(ttft=0.0, length=1)
    assert "cancel-hangs-fixed" in emu.models


async def test_hold_cancel_lets_many_cancels_be_in_flight_at_once() -> None:
    """Parked cancels all count as in flight: max_concurrent_cancels == N."""
    n = 6
    async with ResponsesEmulator(models={"endless": ENDLESS}) as emu:
        async with emu.async_client(max_retries=0) as client:
            ids = [
                (await client.responses.create(model="endless", input="x", background=True)).id
                for _ in range(n)
            ]
            statuses: list[str] = []

            async def cancel(rid: str) -> None:
                statuses.append((await client.responses.cancel(rid)).status)

            with emu.hold("cancel") as hold:
                async with anyio.create_task_group() as tg:
                    for rid in ids:
                        tg.start_soon(cancel, rid)
                    await emu.wait_for(lambda ledger: ledger.cancels_in_flight == n)
                    assert all(emu.ledger[rid].generating for rid in ids)
                    hold.release()
        assert emu.ledger.max_concurrent_cancels == n
        assert emu.ledger.cancel_requests == n
        assert statuses == ["cancelled"] * n
        assert not emu.ledger.orphans()


async def test_hold_created_parks_new_responses_before_response_created() -> None:
    """While held, the ledger knows the response but the client has no event (no id) yet."""
    async with ResponsesEmulator(models={"fast": FAST}) as emu:
        async with emu.async_client(max_retries=0) as client:
            types: list[str] = []

            async def consume() -> None:
                stream = await client.responses.create(
                    model="fast", input="x", stream=True, background=True
                )
                types.extend([event.type async for event in stream])

            with emu.hold("created"):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(consume)
                    await emu.wait_for(lambda ledger: len(ledger) == 1)
                    record = emu.ledger.responses[0]
                    await emu.wait_for(lambda _: record.listeners == 1)
                    assert not record.created_sent
                    assert record.events == []
                    assert types == []
                    emu.hold("created").release()  # another hold, released: still held
                    assert not record.created_sent
                    tg.cancel_scope.cancel()
            await consume()
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert record.created_sent


async def test_wait_for_raises_timeout_error_when_the_predicate_stays_false(
    emu: ResponsesEmulator,
) -> None:
    """wait_for is bounded by its own timeout."""
    with pytest.raises(TimeoutError):
        await emu.wait_for(lambda _: False, timeout=0.05)


def test_wait_for_sync_returns_once_the_response_completes(emu: ResponsesEmulator) -> None:
    """The sync client works, and wait_for_sync wakes on ledger changes."""
    with emu.client(max_retries=0) as client:
        created = client.responses.create(model="fast", input="x", background=True)
        emu.wait_for_sync(lambda ledger: ledger[created.id].status == "completed")
        assert client.responses.retrieve(created.id).output_text
    with pytest.raises(TimeoutError):
        emu.wait_for_sync(lambda _: False, timeout=0.05)


def test_same_seed_gives_the_same_text_and_ids() -> None:
    """Ids, lorem text and latency draws depend on the seed only."""
    model = EmulatedModel(
        ttft=0.0, tokens_per_s=5000.0, length=15, latency=EmulatedModel.Lognormal(median=0.001)
    )

    def run(seed: int) -> tuple[str, str]:
        with ResponsesEmulator(models={"m": model}, seed=seed) as emu, emu.client() as client:
            response = client.responses.create(model="m", input="x")
            return response.id, response.output_text

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_fixed_text_is_split_into_tokens_that_keep_their_spaces() -> None:
    """EmulatedModel(text=...) streams one delta per word, spaces included, joining to the text."""
    text = "Hello  there, general\nKenobi."
    with ResponsesEmulator(models={"t": EmulatedModel(ttft=0.0, text=text)}) as emu:
        with emu.client() as client:
            stream = client.responses.create(model="t", input="x", stream=True)
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    assert deltas == ["Hello", "  there,", " general", "\nKenobi."]
    assert "".join(deltas) == text


async def test_emulator_wide_keepalive_applies_to_every_model() -> None:
    """ResponsesEmulator(keepalive_every=...) adds keepalive events to all streams."""
    slow = EmulatedModel(ttft=0.05, tokens_per_s=100.0, length=3)
    async with ResponsesEmulator(models={"slow": slow}, keepalive_every=0.01) as emu:
        async with emu.async_client(max_retries=0) as client:
            stream = await client.responses.create(model="slow", input="x", stream=True)
            types = [event.type async for event in stream]
    assert "keepalive" in types
    assert types[-1] == "response.completed"


def test_models_can_be_added_while_running(emu: ResponsesEmulator) -> None:
    """emu.models is live: a model added after start is served."""
    emu.models["late"] = EmulatedModel(ttft=0.0, text="late arrival")
    with emu.client(max_retries=0) as client:
        assert client.responses.create(model="late", input="x").output_text == "late arrival"


def test_non_loopback_host_needs_allow_remote() -> None:
    """Binding beyond 127.0.0.1 is refused unless asked for, and then it warns."""
    with pytest.raises(ValueError, match="allow_remote"):
        ResponsesEmulator(host="0.0.0.0")
    with pytest.warns(UserWarning, match="0.0.0.0"):
        ResponsesEmulator(host="0.0.0.0", allow_remote=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResponsesEmulator(host="127.0.0.1")


def test_hold_rejects_unknown_points(emu: ResponsesEmulator) -> None:
    """Only "created" and "cancel" can be held."""
    with pytest.raises(ValueError, match="'created' or 'cancel'"):
        emu.hold("stream")  # type: ignore[arg-type]


def test_ledger_counts_requests_and_reads_records(emu: ResponsesEmulator) -> None:
    """The ledger is a live view: records by id, iteration, and request counts."""
    before = emu.ledger.requests
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="one two three")
    record = emu.ledger[response.id]
    assert emu.ledger.requests == before + 1
    assert response.id in emu.ledger
    assert record in list(emu.ledger)
    assert (record.model, record.background, record.stream) == ("fast", False, False)
    assert record.tokens_generated == FAST.length
    assert record.listeners == 0
    assert response.usage is not None
    assert response.usage.input_tokens == 3
    assert isinstance(emu.ledger, Ledger)


def test_raw_sse_frames_carry_the_event_type_line(emu: ResponsesEmulator) -> None:
    """Each frame is `event: <type>` then `data: <json>` whose type matches."""
    with httpx2.Client(timeout=5) as http:
        response = http.post(
            emu.base_url + "/responses",
            json={"model": "fast", "input": "x", "stream": True},
        )
    frames = [f for f in response.text.split("\n\n") if f]
    for frame in frames:
        event_line, data_line = frame.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"


def test_all_is_sorted_and_complete() -> None:
    """tether.testing re-exports every public name, in a sorted __all__."""
    assert tether.testing.__all__ == sorted(tether.testing.__all__)
    public = {n for n in vars(tether.testing) if not n.startswith(("_", "@"))}
    assert public - {"annotations", "pytest_plugin"} == set(tether.testing.__all__)


def test_pytest_fixtures_give_a_running_emulator_and_sync_client(
    responses_emulator: ResponsesEmulator, emulated_client: openai.OpenAI
) -> None:
    """The plugin's fixtures: default models, and a client bound to the emulator."""
    assert "gpt-5-nano" in responses_emulator.models
    assert str(emulated_client.base_url).rstrip("/") == responses_emulator.base_url
    assert emulated_client.responses.create(model="gpt-5-nano", input="x").status == "completed"


async def test_pytest_async_client_fixture_works_on_every_backend(
    responses_emulator: ResponsesEmulator, emulated_async_client: openai.AsyncOpenAI
) -> None:
    """emulated_async_client runs on the test's backend (asyncio or trio)."""
    responses_emulator.models["quick"] = FAST
    response = await emulated_async_client.responses.create(model="quick", input="x")
    assert response.status == "completed"
    assert responses_emulator.ledger[response.id].tokens_generated == FAST.length
