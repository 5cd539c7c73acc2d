"""A worker of a fleet, run as a process of its own by tests/test_fleet_processes.py.

``python tests/fleet_child.py worker BASE_URL JOURNAL KEY BACKEND LEASE``: opens a scope on
the journal, a slow background stream with *key*, prints ``READY <response id>``, reads the
stream until it stops, prints ``ENDED <reason>`` and exits.
"""

from __future__ import annotations

import sys

import anyio
import openai

import tether


async def worker(base_url: str, journal: str, key: str, lease: float) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        store = tether.open_journal(journal, lease=lease)
        async with tether.open_scope(client, journal=store) as scope:
            async with tether.guarded_stream(scope, model="slow", input="hi", key=key) as stream:
                print("READY", stream.response_id, flush=True)
                async for _ in stream:
                    pass
            print("ENDED", stream.outcome.reason, flush=True)


if __name__ == "__main__":
    command, url, journal_url, key, backend, lease = sys.argv[1:]
    assert command == "worker", command
    anyio.run(worker, url, journal_url, key, float(lease), backend=backend)
