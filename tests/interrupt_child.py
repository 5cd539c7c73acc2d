"""A process that opens guarded streams and is interrupted by SIGINT.

Run by tests/test_critical.py: ``python tests/interrupt_child.py BASE_URL BACKEND [MODE]``.
It logs tether's debug lines to stderr (the parent waits for the one saying the interruption
reached tether), and exits with KeyboardInterrupt. Modes:

- ``open`` (default): one stream, interrupted while it opens;
- ``queued``: one cancel slot; a first stream's stop takes it (the parent holds that cancel
  on the emulator), then the main task's stream stops, waits for the slot (it prints
  ``queued`` once it does) and is interrupted there.
- ``finalizer JOURNAL``: a scope on a journal, one stream; once it is READY (stdout), the
  child sends itself SIGINT from inside a weakref callback, the way Ctrl-C can land in a
  finalizer (trio then raises KeyboardInterrupt where the interpreter ignores it), and goes
  on: ``SURVIVED <reason>`` (stdout) if 20 checkpoints later it still runs (Ctrl-C was lost),
  else ``INTERRUPTED <reason>`` (trio; asyncio raises KeyboardInterrupt outside ``main``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import weakref

import anyio
import openai

import tether
import tether._cancel
from tether._cancel import cancel_slots


async def opening(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            async for _ in stream:
                pass


async def report(client: openai.AsyncOpenAI) -> None:
    """Say ``queued`` once the main task's stop waits for the slot, then wait like the rest.

    KI-protected on trio (see ``__main__``): a SIGINT that comes while this task prints then
    goes to the main task's wait, as it does when every task waits, not into this task.
    """
    slots = cancel_slots(client)
    while slots.statistics().tasks_waiting == 0:
        await anyio.wait_all_tasks_blocked()
    print("queued", file=sys.stderr, flush=True)
    await anyio.sleep_forever()


async def queued(base_url: str) -> None:
    tether._cancel._IN_FLIGHT = 1  # pyright: ignore[reportPrivateUsage]
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:

        async def first() -> None:
            async with tether.guarded_stream(client, model="slow", input="hi"):
                pass  # its stop takes the only slot; the parent holds its cancel

        async with anyio.create_task_group() as tg:
            try:
                async with tether.guarded_stream(client, model="slow", input="hi") as stream:
                    tg.start_soon(first)
                    while cancel_slots(client).borrowed_tokens == 0:
                        await anyio.wait_all_tasks_blocked()
                    tg.start_soon(report, client)
                    del stream  # leaving the block: this stop waits for the slot
            finally:
                tg.cancel_scope.cancel()  # the reporter's wait


class _Garbage:
    """An object whose weakref callback is where Ctrl-C lands."""


def _ctrl_c_in_a_callback(_: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs here, at a loop's check, inside the callback
        pass


async def finalizer(base_url: str, journal: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        scope = tether.open_scope(client, journal=journal)
        try:
            async with scope as opened:
                async with tether.guarded_stream(opened, model="slow", input="hi") as stream:
                    print("READY", stream.response_id, flush=True)
                    garbage = _Garbage()
                    ref = weakref.ref(garbage, _ctrl_c_in_a_callback)
                    del garbage  # the callback runs now, in this task
                    # trio hands a signal to the loop within two checkpoints: plenty of room
                    for _ in range(20):
                        await anyio.lowlevel.checkpoint()
                del ref
                print("SURVIVED", stream.outcome.reason, flush=True)
        except KeyboardInterrupt:
            print("INTERRUPTED", stream.outcome.reason, flush=True)
            raise


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
    url, backend = sys.argv[1:3]
    mode = sys.argv[3] if len(sys.argv) > 3 else "open"
    if backend == "trio":
        import trio

        trio.lowlevel.enable_ki_protection(report)
    if mode == "finalizer":
        anyio.run(finalizer, url, sys.argv[4], backend=backend)
    else:
        anyio.run({"open": opening, "queued": queued}[mode], url, backend=backend)
