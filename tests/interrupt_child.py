"""A process that opens a guarded stream and is interrupted by SIGINT while it opens.

Run by tests/test_critical.py: ``python tests/interrupt_child.py BASE_URL BACKEND``. It logs
tether's debug lines to stderr (the parent waits for the one saying the interruption
reached the open), and exits with KeyboardInterrupt.
"""

from __future__ import annotations

import logging
import sys

import anyio
import openai

import tether


async def main(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            async for _ in stream:
                pass


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(message)s")
    url, backend = sys.argv[1:3]
    anyio.run(main, url, backend=backend)
