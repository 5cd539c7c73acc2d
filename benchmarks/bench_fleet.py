"""What the fleet journal costs, and how fast it reacts: writes docs/benchmarks/fleet.md.

Three figures, on asyncio and trio, on the embedded emulator and real local servers
(``tests/fleet_servers.py``: a fresh redis-server and PostgreSQL on loopback):

1. The cost of the journal per stream opened: a guarded stream of a short response, read to
   its end, with no journal / SQLite / Redis / PostgreSQL (median of N streams).
2. Cross-process cancel latency: a worker process owns a stream of key ``k``; this process
   calls ``request_cancel(journal, key=k)``; the latency is the time until the emulator
   received the owner's ``POST /cancel`` (the ledger's ``cancel_requested_at``, same clock).
3. ``reap`` of 1,000 entries left by a dead owner (1,000 real queued background responses).

Run: ``python benchmarks/bench_fleet.py [--streams 40] [--cancels 20] [--entries 1000]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fleet_servers import postgres_server, redis_server

import tether
from tether.testing import EmulatedModel, ResponsesEmulator

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "fleet.md"
MODELS = {
    "short": EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=5),
    "long": EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=4000),
    "queued": EmulatedModel(ttft=600.0, tokens_per_s=40.0, length=5),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def per_stream(base_url: str, journal: str | None, count: int) -> float:
    """Median seconds for one guarded stream, opened and read to its end."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench") as client:
        store = None if journal is None else tether.open_journal(journal)
        times: list[float] = []
        async with tether.open_scope(client, journal=store) as scope:
            for i in range(count + 3):
                started = time.perf_counter()
                async with tether.guarded_stream(
                    scope, model="short", input="hi", key=f"k{i}"
                ) as s:
                    await s.get_final_response()
                if i >= 3:  # warm-up: connections, threads, the first schema check
                    times.append(time.perf_counter() - started)
        return statistics.median(times)


async def worker(base_url: str, journal: str, count: int) -> None:
    """The owner (a process of its own): streams k0, k1, ... each until it is cancelled."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench") as client:
        async with tether.open_scope(client, journal=tether.open_journal(journal)) as scope:
            for i in range(count):
                async with tether.guarded_stream(scope, model="long", input="hi", key=f"k{i}") as s:
                    print("READY", s.response_id, flush=True)
                    async for _ in s:
                        pass


async def cancel_latency(
    emulator: ResponsesEmulator, journal: str, count: int, backend: str
) -> list[float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", emulator.base_url, journal, str(count), backend],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    store = tether.open_journal(journal)
    latencies: list[float] = []
    try:
        for i in range(count):
            line = await anyio.to_thread.run_sync(process.stdout.readline)
            response_id = line.split()[1]
            started = time.monotonic()
            await tether.request_cancel(store, key=f"k{i}", wait=0)
            await emulator.wait_for(lambda ledger, r=response_id: ledger[r].cancel_calls > 0)
            requested = emulator.ledger[response_id].cancel_requested_at
            assert requested is not None
            latencies.append(requested - started)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    return latencies


async def reap_entries(base_url: str, journal: str, count: int) -> float:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench") as client:
        dead = tether.open_journal(journal)  # never attached: no lease, a dead owner
        limiter = anyio.CapacityLimiter(20)

        async def leave(i: int) -> None:
            async with limiter:
                response = await client.responses.create(
                    model="queued", input="hi", background=True
                )
                await dead.intend(f"i{i}", key=None, model="queued", base_url=str(client.base_url))
                await dead.started(f"i{i}", response.id)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(leave, i)
        started = time.perf_counter()
        report = await tether.reap(client, journal)
        elapsed = time.perf_counter() - started
        assert len(report.cancelled) >= count, report.failed[:1]
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--cancels", type=int, default=20)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--worker", nargs=4, metavar=("BASE_URL", "JOURNAL", "N", "BACKEND"))
    args = parser.parse_args()
    if args.worker:
        base_url, journal, count, backend = args.worker
        anyio.run(worker, base_url, journal, int(count), backend=backend)
        return
    rows: list[str] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        redis_server() as redis,
        postgres_server() as postgres,
        ResponsesEmulator(models=MODELS, seed=1) as emulator,
    ):
        stores = {
            "SQLite": str(Path(folder) / "journal.sqlite3"),
            "Redis": redis.url,
            "PostgreSQL": postgres.url,
        }
        for backend in ("asyncio", "trio"):
            bare = anyio.run(per_stream, emulator.base_url, None, args.streams, backend=backend)
            rows.append(f"| {backend} | none | {bare * 1e3:.2f} | - | - | - | - |")
            for name, journal in stores.items():
                with_journal = anyio.run(
                    per_stream, emulator.base_url, journal, args.streams, backend=backend
                )
                latencies = anyio.run(
                    cancel_latency, emulator, journal, args.cancels, backend, backend=backend
                )
                reap_s = anyio.run(
                    reap_entries, emulator.base_url, journal, args.entries, backend=backend
                )
                rows.append(
                    f"| {backend} | {name} | {with_journal * 1e3:.2f} | "
                    f"{(with_journal - bare) * 1e3:+.2f} | "
                    f"{percentile(latencies, 0.5) * 1e3:.0f} | {percentile(latencies, 0.99) * 1e3:.0f} | "
                    f"{reap_s:.2f} |"
                )
                print(rows[-1], flush=True)
    table = "\n".join(
        [
            "# Fleet journal benchmark",
            "",
            "Written by `python benchmarks/bench_fleet.py` "
            f"(streams={args.streams}, cancels={args.cancels}, entries={args.entries}), on the "
            "embedded emulator and local servers on loopback (redis-server with "
            "`appendfsync always`, PostgreSQL with `fsync=off`). A shared 2-core machine: "
            "the figures are indicative.",
            "",
            "| backend | journal | ms per stream (median) | journal cost (ms) | "
            "cancel p50 (ms) | cancel p99 (ms) | reap of entries (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "- *ms per stream*: a guarded stream of a 5-token response, opened and read to its end.",
            "- *cancel*: `request_cancel` in this process until the owner process's "
            "`POST /cancel` reached the server (SQLite owners poll every 0.2 s; Redis and "
            "PostgreSQL push, the listener thread waking at least every 0.25 s).",
            f"- *reap*: `tether.reap` of {args.entries} entries a dead owner left "
            "(claim, cancel concurrently, remove).",
            "",
        ]
    )
    OUT.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
