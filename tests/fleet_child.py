"""A worker of a fleet, or its reaper, run as a process of its own by tests/test_fleet_processes.py.

``python tests/fleet_child.py worker BASE_URL JOURNAL KEY BACKEND LEASE``: opens a scope on
the journal, a slow background stream with *key*, prints ``READY <response id>``, reads the
stream until it stops, prints ``ENDED <reason>`` and exits.

``python tests/fleet_child.py reap BASE_URL JOURNAL BACKEND``: reaps the journal once and
prints the report as one JSON line (``{"cancelled": [ids], "skipped": [ids], ...}``).

``python tests/fleet_child.py cancel BASE_URL JOURNAL KEY BACKEND``: ``request_cancel`` for
*key* (with a client), prints the report as one JSON line.
"""

from __future__ import annotations

import json
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


async def reap(base_url: str, journal: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        report = await tether.reap(client, journal, grace=5.0)
    print(
        json.dumps(
            {
                "cancelled": [e.response_id for e, _ in report.cancelled],
                "statuses": [r.status for _, r in report.cancelled],
                "skipped": [e.response_id for e in report.skipped],
                "taken": [e.response_id for e in report.taken],
                "failed": [e.response_id for e, _ in report.failed],
            }
        ),
        flush=True,
    )


async def cancel(base_url: str, journal: str, key: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        report = await tether.request_cancel(journal, key=key, client=client, wait=10.0)
    print(
        json.dumps(
            {
                "stopped": [e.response_id for e in report.stopped],
                "cancelled": [e.response_id for e, _ in report.cancelled],
                "unconfirmed": [e.response_id for e in report.unconfirmed],
                "listeners": report.listeners,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    command, url, journal_url, *rest = sys.argv[1:]
    if command == "worker":
        key, backend, lease = rest
        anyio.run(worker, url, journal_url, key, float(lease), backend=backend)
    elif command == "reap":
        (backend,) = rest
        anyio.run(reap, url, journal_url, backend=backend)
    else:
        key, backend = rest
        anyio.run(cancel, url, journal_url, key, backend=backend)
