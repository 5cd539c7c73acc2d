"""Streams whose blocks outlive their scope, and blocks left through a closed generator.

A guarded stream's ``async with`` normally ends inside its scope's. When it does not (in an
async generator that its consumer stopped iterating and has not closed, or in a task that
runs past the scope), the scope's exit stops it (``scope_exited``): its response does not
go on generating after the scope. A scope whose block exited opens nothing more. On asyncio
and trio; the sync facade's twins are in ``tests/test_sync_scope.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

import tether

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from tether.testing import ResponsesEmulator


async def _deltas(scope: tether.Scope, streams: list[tether.GuardedStream]) -> AsyncGenerator[str]:
    """What an app writes to hand a response to its caller: a generator around the block."""
    async with tether.guarded_stream(scope, model="slow", input="x") as stream:
        streams.append(stream)
        async for text in stream.text_deltas():
            yield text


async def _left_open_past_the_scope(
    client: openai.AsyncOpenAI,
) -> tuple[AsyncGenerator[str], tether.GuardedStream]:
    """A scope whose body takes one delta from ``_deltas`` and walks away: the generator
    (not closed) and its stream, once the scope has exited."""
    streams: list[tether.GuardedStream] = []
    async with tether.open_scope(client) as scope:
        deltas = _deltas(scope, streams)
        await deltas.__anext__()
    return deltas, streams[0]


async def test_a_stream_left_open_in_an_unclosed_generator_is_cancelled_when_its_scope_exits(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    deltas, stream = await _left_open_past_the_scope(client)
    record = emulator.ledger[stream.response_id or ""]
    assert (record.status, record.cancel_calls) == ("cancelled", 1)
    await deltas.aclose()


async def test_a_generator_closed_after_its_scope_exited_finds_its_stream_stopped(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    deltas, stream = await _left_open_past_the_scope(client)
    await deltas.aclose()
    outcome = stream.outcome
    assert (outcome.reason, outcome.status) == ("scope_exited", "cancelled")
    assert emulator.ledger[outcome.response_id or ""].cancel_calls == 1  # not a second one


async def test_a_stream_read_by_a_task_that_outlives_its_scope_ends_at_the_scope_exit(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    streams: list[tether.GuardedStream] = []
    reading = anyio.Event()
    read = 0

    async def reader(scope: tether.Scope) -> None:
        nonlocal read
        async with tether.guarded_stream(scope, model="slow", input="x") as stream:
            streams.append(stream)
            async for _ in stream:
                read += 1
                reading.set()

    async with anyio.create_task_group() as tg:
        async with tether.open_scope(client) as scope:
            tg.start_soon(reader, scope)  # a task of the outer group: it runs past the scope
            await reading.wait()
        assert emulator.ledger[streams[0].response_id or ""].status == "cancelled"
    assert streams[0].outcome.reason == "scope_exited"  # its loop ended without an error
    assert read < 2000


async def test_a_finished_response_left_open_is_closed_at_the_scope_exit_not_cancelled(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    streams: list[tether.GuardedStream] = []

    async def events(scope: tether.Scope) -> AsyncGenerator[Any]:
        async with tether.guarded_stream(scope, model="fast", input="x") as stream:
            streams.append(stream)
            async for event in stream:
                yield event

    async with tether.open_scope(client) as scope:
        every = events(scope)
        async for event in every:
            if event.type == "response.completed":
                break  # its final event taken, the generator not read to its end
    await every.aclose()
    outcome = streams[0].outcome
    assert (outcome.reason, outcome.receipt) == ("completed", None)
    assert emulator.ledger[outcome.response_id or ""].cancel_calls == 0


async def test_an_async_generator_closed_by_its_consumer_stops_its_stream_as_a_break(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    streams: list[tether.GuardedStream] = []
    async with tether.open_scope(client) as scope:
        deltas = _deltas(scope, streams)
        await deltas.__anext__()
        await deltas.aclose()  # GeneratorExit through the block: the consumer is done
        outcome = streams[0].outcome
        assert (outcome.reason, outcome.status) == ("break", "cancelled")
    assert emulator.ledger[outcome.response_id or ""].status == "cancelled"


async def test_opening_a_stream_on_a_scope_whose_block_exited_raises_and_sends_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client) as scope:
        pass
    with pytest.raises(RuntimeError, match="block has exited"):
        async with tether.guarded_stream(scope, model="slow", input="x"):
            pass  # pragma: no cover - not entered
    assert len(emulator.ledger) == 0


async def test_a_race_attempt_on_its_own_client_counts_in_the_scope_outcomes(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with emulator.async_client() as other, tether.open_scope(client) as scope:
        requests: list[dict[str, Any]] = [
            {"model": "fast", "input": "a"},
            {"model": "slow", "input": "b", "client": other},
        ]
        result = await tether.race(scope, requests, win="first_completed")
    assert sorted(o.reason for o in scope.outcomes) == ["completed", "race_lost"]
    assert len(scope.outcomes) == len(result.attempts)


async def test_a_race_on_a_scope_whose_block_exited_raises_and_sends_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with emulator.async_client() as other:
        async with tether.open_scope(client) as scope:
            pass
        requests: list[dict[str, Any]] = [
            {"model": "fast", "input": "a", "client": other},
            {"model": "fast", "input": "b", "client": other},
        ]
        with pytest.raises(RuntimeError, match="block has exited"):
            await tether.race(scope, requests)
    assert len(emulator.ledger) == 0


async def test_a_stream_still_queued_for_a_slot_when_its_scope_exits_sends_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    streams: list[tether.GuardedStream] = []

    async def reader(scope: tether.Scope) -> None:
        async with tether.guarded_stream(scope, model="slow", input="x") as stream:
            streams.append(stream)
            async for _ in stream:
                pass

    async with anyio.create_task_group() as tg:
        async with tether.open_scope(client, max_concurrency=1) as scope:
            tg.start_soon(reader, scope)  # holds the one slot
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            tg.start_soon(reader, scope)  # queued for it, past the scope
            await anyio.wait_all_tasks_blocked()
    queued = next(stream for stream in streams if stream.response_id is None)
    assert queued.outcome.reason == "scope_exited"
    assert len(emulator.ledger) == 1  # the queued one sent nothing
    assert emulator.ledger.responses[0].status == "cancelled"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_task_cancel_during_the_scope_exits_stop_lets_the_cancel_finish(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """``Task.cancel()`` (a supervisor, ``asyncio.timeout``) while the scope's exit stops a
    block left open: the cancel reaches the server, then the cancellation goes on."""
    streams: list[tether.GuardedStream] = []
    kept: list[AsyncGenerator[str]] = []

    async def body() -> None:
        async with tether.open_scope(client) as scope:
            kept.append(_deltas(scope, streams))
            await kept[0].__anext__()

    with emulator.hold("cancel") as hold:
        task = asyncio.get_running_loop().create_task(body())
        await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
        task.cancel()
        hold.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    await kept[0].aclose()
    outcome = streams[0].outcome
    assert (outcome.reason, outcome.receipt and outcome.receipt.status) == (
        "scope_exited",
        "cancelled",
    )
    assert emulator.ledger[outcome.response_id or ""].cancel_calls == 1
