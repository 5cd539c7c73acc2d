"""Scopes (``tether.open_scope``): the deadline and what remains of it, ``cancel()``, the
outcomes recorded in the order streams ended, the concurrency limit, and ``confirm``
re-reading a cancelled status; on asyncio and trio."""

from __future__ import annotations

import math

import anyio
import openai
import pytest

import tether
from tether.testing import ResponsesEmulator


async def test_remaining_is_infinite_without_a_deadline(client: openai.AsyncOpenAI) -> None:
    async with tether.open_scope(client) as scope:
        assert scope.remaining() == math.inf
        assert scope.deadline == math.inf


@pytest.mark.virtual_time
async def test_remaining_counts_down_to_zero_on_the_scope_clock() -> None:
    async with openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(tether.DeadlineExceeded):
            async with tether.open_scope(client, deadline=10) as scope:
                assert scope.remaining() == 10
                await anyio.sleep(4)
                assert scope.remaining() == 6
                await anyio.sleep(100)
        assert scope.remaining() == 0


@pytest.mark.virtual_time
async def test_deadline_exceeded_is_a_timeout_error_naming_the_deadline() -> None:
    async with openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(TimeoutError, match=r"deadline of 2\.5s"):
            async with tether.open_scope(client, deadline=2.5):
                await anyio.sleep(10)


async def test_cancel_outside_the_block_is_an_error(client: openai.AsyncOpenAI) -> None:
    scope = tether.Scope(client)
    with pytest.raises(RuntimeError, match="not open"):
        scope.cancel()


async def test_body_exception_is_not_wrapped_in_a_group(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(KeyError):
        async with tether.open_scope(client):
            raise KeyError("mine")


async def test_outcomes_are_recorded_in_the_order_streams_ended(
    client: openai.AsyncOpenAI,
) -> None:
    async with tether.open_scope(client) as scope:
        async with tether.guarded_stream(scope, model="fast", input="a") as first:
            await first.get_final_response()
        async with tether.guarded_stream(scope, model="slow", input="b") as second:
            pass
    assert scope.outcomes == (first.outcome, second.outcome)
    assert [o.reason for o in scope.outcomes] == ["completed", "break"]


async def test_max_concurrency_bounds_the_streams_open_at_once(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    peak = 0

    async def one(scope: tether.Scope, gate: anyio.Event) -> None:
        nonlocal peak
        async with tether.guarded_stream(scope, model="slow", input="x"):
            peak = max(peak, scope.live)
            await gate.wait()

    gate = anyio.Event()
    async with tether.open_scope(client, max_concurrency=2) as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one, scope, gate)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 2)
            assert len(emulator.ledger.responses) == 2  # the other two wait for a slot
            gate.set()
    assert peak == 2
    assert len(emulator.ledger.responses) == 4


async def test_confirm_rereads_the_cancelled_status(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client, confirm=True) as scope:
        async with tether.guarded_stream(scope, model="slow", input="x") as stream:
            pass
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"


@pytest.mark.virtual_time
async def test_scope_cancel_after_the_deadline_fired_still_raises_deadline_exceeded() -> None:
    """A watchdog's ``finally: scope.cancel()`` must not swallow the deadline (as fail_after)."""
    async with openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(tether.DeadlineExceeded):
            async with tether.open_scope(client, deadline=5) as scope:
                try:
                    await anyio.sleep(10)
                finally:
                    scope.cancel()
