"""Where observers are registered: one block and its tasks, or the whole process for a block."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

import tether
from tether import observe

if TYPE_CHECKING:
    import openai

    from tether.testing import ResponsesEmulator


async def complete_one(client: openai.AsyncOpenAI) -> None:
    async with tether.guarded_stream(client, model="fast", input="hi") as stream:
        await stream.get_final_response()


async def test_a_scoped_observer_misses_a_task_started_before_its_block(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    seen: list[object] = []
    go = anyio.Event()

    async def elsewhere() -> None:
        await go.wait()
        await complete_one(client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(elsewhere)
        with observe.observing(seen.append):
            go.set()
    assert seen == []


async def test_a_process_wide_observer_sees_a_task_started_before_its_block(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    seen: list[object] = []
    go = anyio.Event()
    done = anyio.Event()

    async def elsewhere() -> None:
        await go.wait()
        await complete_one(client)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(elsewhere)
        with observe.observing(seen.append, process_wide=True):
            go.set()
            await done.wait()
    ended = [e for e in seen if isinstance(e, observe.StreamEvent.Ended)]
    assert [e.outcome.reason for e in ended] == ["completed"]


async def test_a_process_wide_observer_is_removed_when_its_block_exits(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    seen: list[object] = []
    with observe.observing(seen.append, process_wide=True):
        pass
    await complete_one(client)
    assert seen == []
