"""A worker of a fleet, run as a process of its own by tests/test_fleet_processes.py.

``python tests/fleet_child.py worker BASE_URL JOURNAL KEY BACKEND LEASE``: opens a scope on
the journal, a slow background stream with *key*, prints ``READY <response id>``, reads the
stream until it stops, prints ``ENDED <reason>`` and exits.

``python tests/fleet_child.py pair BASE_URL JOURNAL KEY BACKEND LEASE``: the shape of a
worker in ``tests/fleet_soak.py``: one scope (grace 3 s) on ``open_journal(JOURNAL,
lease=LEASE)``, two slow background streams (keys ``KEY-a`` and ``KEY-b``) in a task group,
each printing ``READY <key> <response id>``, then ``ENDED <key> <reason>`` when it stops;
SIGINT (Ctrl-C) ends it with KeyboardInterrupt.
"""

from __future__ import annotations

import faulthandler
import signal
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


async def pair(base_url: str, journal: str, key: str, lease: float) -> None:
    async def one(scope: tether.Scope, key: str) -> None:
        async with tether.guarded_stream(scope, model="slow", input="hi", key=key) as stream:
            print("READY", key, stream.response_id, flush=True)
            async for _ in stream:
                pass
        print("ENDED", key, stream.outcome.reason, flush=True)

    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        store = tether.open_journal(journal, lease=lease)
        async with tether.open_scope(client, journal=store, grace=3) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, scope, f"{key}-a")
                tg.start_soon(one, scope, f"{key}-b")


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung worker's threads, on demand
    command, url, journal_url, key, backend, lease = sys.argv[1:]
    assert command in ("worker", "pair"), command
    run = worker if command == "worker" else pair
    anyio.run(run, url, journal_url, key, float(lease), backend=backend)
