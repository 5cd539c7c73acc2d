"""How fast is the Responses emulator? Events per second, 1 to 1,000 concurrent streams.

Usage:
    python benchmarks/bench_emulator.py [--out benchmarks/results/emulator.json] [--quick]

Each scenario streams background responses from a model with no pacing (the
emulator emits as fast as it can), through a raw async HTTP client (httpx2,
counting SSE frames in the byte stream, so the client is not the bottleneck) and
through the openai SDK (which parses every event with pydantic), over HTTP/1.1
(uvicorn) and over HTTP/2 (hypercorn, h2c: the streams of a client multiplexed on a few
connections, at most 100 per connection). Every scenario runs on asyncio and on trio. The server runs in its own thread, in this process: the
figures include the client's share of the GIL, as in a test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

from tether.testing import EmulatedModel, ResponsesEmulator

UNPACED = 1e9  # tokens/s: generation is never the limit
# (name, client, concurrent streams, output tokens per stream, HTTP/2)
SCENARIOS = [
    ("raw 1 stream", "raw", 1, 20_000, False),
    ("raw 200 streams", "raw", 200, 400, False),
    ("raw 1000 streams", "raw", 1000, 40, False),
    ("sdk 1 stream", "sdk", 1, 5_000, False),
    ("sdk 200 streams", "sdk", 200, 100, False),
    ("h2 raw 1 stream", "raw", 1, 20_000, True),
    ("h2 raw 200 streams", "raw", 200, 400, True),
    ("h2 sdk 200 streams", "sdk", 200, 100, True),
]


async def _raw_stream(http: httpx2.AsyncClient, url: str, model: str) -> int:
    body = {"model": model, "input": "bench", "stream": True, "background": True}
    events = 0
    last = b""
    async with http.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            # Frames end with a blank line; one may straddle two chunks.
            events += chunk.count(b"\n\n") + (last == b"\n" and chunk[:1] == b"\n")
            last = chunk[-1:]
    return events


async def _sdk_stream(client: Any, model: str) -> int:
    stream = await client.responses.create(model=model, input="bench", stream=True, background=True)
    events = 0
    async for _ in stream:
        events += 1
    return events


async def _scenario(
    emu: ResponsesEmulator, kind: str, streams: int, length: int, http2: bool
) -> dict[str, Any]:
    model = f"bench-{length}"
    emu.models[model] = EmulatedModel(ttft=0.0, tokens_per_s=UNPACED, length=length)
    counts: list[int] = []
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx2.AsyncClient(timeout=60, limits=limits, http1=not http2, http2=http2) as http:
        client = emu.async_client(max_retries=0, http_client=http) if kind == "sdk" else None

        async def one() -> None:
            if client is None:
                counts.append(await _raw_stream(http, emu.base_url + "/responses", model))
            else:
                counts.append(await _sdk_stream(client, model))

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(streams):
                tg.start_soon(one)
        elapsed = time.perf_counter() - start
    expected = length + 9  # 3 opening, 2 added, the deltas, 3 done, completed
    events = sum(counts)
    return {
        "streams": streams,
        "completed": sum(1 for c in counts if c == expected),
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
    }


async def _run_backend(
    emulators: dict[bool, ResponsesEmulator], quick: bool
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, kind, streams, length, http2 in SCENARIOS:
        if quick:
            length = max(10, length // 10)
        results[name] = await _scenario(emulators[http2], kind, streams, length, http2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--doc",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "emulator.md",
        help="write the figures as a markdown table here (the docs' benchmarks page)",
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the events (smoke)")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "backends": {},
    }
    with ResponsesEmulator(models={}) as h1, ResponsesEmulator(models={}, http2=True) as h2:
        emulators = {False: h1, True: h2}
        for backend in ("asyncio", "trio"):
            figures["backends"][backend] = anyio.run(
                _run_backend, emulators, args.quick, backend=backend
            )
        orphans = len(h1.ledger.orphans()) + len(h2.ledger.orphans())
    figures["orphans_left"] = orphans

    header = f"{'scenario':<18} {'backend':<8} {'streams':>7} {'done':>5} {'events':>8} {'s':>7} {'events/s':>9}"
    print(header)
    print("-" * len(header))
    for backend, results in figures["backends"].items():
        for name, r in results.items():
            print(
                f"{name:<18} {backend:<8} {r['streams']:>7} {r['completed']:>5} "
                f"{r['events']:>8} {r['seconds']:>7.2f} {r['events_per_s']:>9}"
            )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.out}")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(_markdown(figures, args.quick))
    failed = [
        (b, n)
        for b, results in figures["backends"].items()
        for n, r in results.items()
        if r["completed"] != r["streams"]
    ]
    if failed or orphans:
        print(f"incomplete streams: {failed}, orphans: {orphans}", file=sys.stderr)
        return 1
    return 0


def _markdown(figures: dict[str, Any], quick: bool) -> str:
    backends = list(figures["backends"])
    names = list(figures["backends"][backends[0]])
    lines = [
        f"Measured by `python benchmarks/bench_emulator.py{' --quick' if quick else ''}` "
        f"(Python {figures['python']}, {figures['machine']}; server and clients in one process).",
        "",
        "| scenario | streams | " + " | ".join(f"{b} events/s" for b in backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    for name in names:
        first = figures["backends"][backends[0]][name]
        cells = [f"{figures['backends'][b][name]['events_per_s']:,}" for b in backends]
        lines.append(f"| {name} | {first['streams']} | " + " | ".join(cells) + " |")
    lines += ["", f"Orphans left at the end: {figures['orphans_left']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
