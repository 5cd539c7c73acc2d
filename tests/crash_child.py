"""A process that opens background streams with a journal, says READY, then is SIGKILLed.

Run by tests/test_journal.py: ``python tests/crash_child.py BASE_URL JOURNAL N BACKEND [LEASE]``.
"""

from __future__ import annotations

import sys

import anyio
import openai

import tether


async def main(base_url: str, journal: str, count: int, lease: float) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        store = tether.open_journal(journal, lease=lease)
        async with tether.open_scope(client, journal=store) as scope:
            ready = 0

            async def one() -> None:
                nonlocal ready
                async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
                    ready += 1
                    if ready == count:
                        print("READY", flush=True)
                    async for _ in stream:
                        pass

            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(one)


if __name__ == "__main__":
    url, path, n, backend = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    anyio.run(main, url, path, int(n), lease, backend=backend)
