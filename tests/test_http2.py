"""The promise over HTTP/2 (h2c with prior knowledge, on the emulator's hypercorn server).

On HTTP/2 the client's HTTP stack never resets a stream it closes early, and a read after
close blocks instead of raising: tether must neither hang on it nor leak the stream's slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import openai
import pytest

import tether
from tests.conftest import TEST_MODELS
from tests.support import read_deltas, settled
from tests.test_cancel import stop_many_with_cancels_held
from tether._pytest_plugin import fail_if_left_generating
from tether.testing import ResponsesEmulator


@pytest.fixture
def h2_emulator(request: pytest.FixtureRequest) -> Iterator[ResponsesEmulator]:
    """The ``emulator`` fixture over HTTP/2, with the same check at teardown."""
    with ResponsesEmulator(models=dict(TEST_MODELS), seed=1, http2=True) as emu:
        yield emu
        fail_if_left_generating(request, emu)


@pytest.fixture
async def h2_client(h2_emulator: ResponsesEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with h2_emulator.async_client() as client:
        yield client


async def test_break_on_http2_cancels_on_the_server_without_waiting_out_grace(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    with anyio.move_on_after(10) as watchdog:
        async with tether.guarded_stream(h2_client, model="slow", input="hi", grace=5) as s:
            await read_deltas(s, 1)
    assert not watchdog.cancel_called
    assert s.outcome.receipt is not None
    assert s.outcome.receipt.status == "cancelled"
    assert s.outcome.cleanup_error is None
    assert (await settled(h2_emulator, s.response_id)).status == "cancelled"


async def test_cancel_from_another_task_interrupts_a_reader_blocked_on_http2(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(h2_client, model="trickle", input="hi") as stream:
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                async for _ in stream:  # blocks: trickle sends a token every 20 s
                    pass

            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            with anyio.move_on_after(10) as watchdog:
                receipt = await stream.cancel()
    assert not watchdog.cancel_called
    assert receipt.status == "cancelled"
    assert stream.outcome.reason == "explicit"


async def test_many_early_exits_on_one_http2_connection_leave_it_serving(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    """More early exits than the connection has stream slots (100): none keeps its slot."""
    for n in range(110):
        async with tether.guarded_stream(h2_client, model="slow", input=str(n)) as stream:
            await read_deltas(stream, 1)
    async with tether.guarded_stream(h2_client, model="fast", input="still serving?") as stream:
        response = await stream.get_final_response()
    assert response.status == "completed"


async def test_race_losers_on_http2_are_cancelled_on_the_server(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    result = await tether.race(
        h2_client,
        [{"model": "fast", "input": "a"}] + [{"model": "slow", "input": "b"}] * 3,
    )
    assert result.winner.model == "fast"
    for loser in result.losers:
        if loser.outcome is not None and loser.outcome.response_id is not None:
            assert (await settled(h2_emulator, loser.outcome.response_id)).status == "cancelled"


async def test_scope_deadline_on_http2_cancels_every_stream(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded):
        async with tether.open_scope(h2_client, deadline=1.0) as scope:
            async with anyio.create_task_group() as tg:
                for n in range(5):

                    async def one(n: int = n) -> None:
                        async with tether.guarded_stream(scope, model="slow", input=str(n)) as s:
                            async for _ in s:
                                pass

                    tg.start_soon(one)
    assert [o.receipt.status for o in scope.outcomes if o.receipt] == ["cancelled"] * 5


async def test_stops_queued_for_a_cancel_slot_on_http2_each_cancel_on_the_server(
    h2_emulator: ResponsesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers blocked on one HTTP/2 connection, two cancel slots, six stops: four queue."""
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 2)
    await stop_many_with_cancels_held(h2_emulator, streams=6, slots=2)
    assert h2_emulator.ledger.max_concurrent_cancels == 2
    assert [r.status for r in h2_emulator.ledger].count("cancelled") == 6


async def test_a_reader_blocked_on_http2_in_a_task_past_its_scope_ends_at_the_scope_exit(
    h2_emulator: ResponsesEmulator, h2_client: openai.AsyncOpenAI
) -> None:
    streams: list[tether.GuardedStream] = []

    async def reader(scope: tether.Scope) -> None:
        async with tether.guarded_stream(scope, model="trickle", input="hi") as stream:
            streams.append(stream)
            async for _ in stream:  # blocks: trickle sends a token every 20 s
                pass

    with anyio.move_on_after(10) as watchdog:
        async with anyio.create_task_group() as tg:
            async with tether.open_scope(h2_client) as scope:
                tg.start_soon(reader, scope)
                await h2_emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
                await anyio.wait_all_tasks_blocked()
    assert not watchdog.cancel_called
    assert streams[0].outcome.reason == "scope_exited"
    assert h2_emulator.ledger.responses[0].status == "cancelled"
