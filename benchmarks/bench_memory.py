"""1,000 streams at once, then stopped: peak memory per stream, tether against the raw SDK.

Each contender runs in a fresh process of its own (peak RSS is per process), against an
emulator served by another process (its memory is not counted), on asyncio and on trio:

- raw SDK: 1,000 background streams, each read in a task of its own (as a program reads
  them) past ``response.created``; then their task group is cancelled and each
  ``async with stream`` closes its stream (what the SDK offers: the responses go on
  generating, the bug tether fixes);
- tether: 1,000 ``guarded_stream`` blocks in one ``open_scope``, each read to
  ``response.created``; then ``scope.cancel()``: every stream is closed and cancelled on the
  server, all at once.
- tether, ``confirm=False``: the same, trusting each cancel's ``cancelled`` answer (no
  read-back: one request less per stop).

Per stream: (peak RSS - RSS once warm) / 1,000, warm meaning one stream already went through
the same path (imports, pydantic schemas, the pool). Also: how long the scope took to exit
after the cancel, against its grace, and how many responses were still generating on the
server once it had (orphans: retrieved afterwards).

Run: ``python benchmarks/bench_memory.py`` (writes ``docs/benchmarks/memory.md``,
``docs/benchmarks/memory.png`` and ``benchmarks/results/memory.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import openai

import tether
from _orphans import still_generating
from tether.testing import EmulatedModel, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STREAMS = 1000
GRACE = 5.0
MODELS = {"endless": EmulatedModel(ttft=0.0, tokens_per_s=0.5, length=10_000)}  # cheap to serve


def serve() -> None:
    """The emulator's process: print its base URL, serve until stdin closes."""
    with ResponsesEmulator(models=MODELS, seed=7) as emu:
        print(emu.base_url, flush=True)
        sys.stdin.read()


def _rss_kb() -> int:
    """The current resident set size, in KiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def raw(client: openai.AsyncOpenAI, n: int) -> dict[str, Any]:
    ids: list[str] = []
    opened = 0
    ready = anyio.Event()

    async def one() -> None:
        nonlocal opened
        stream = await client.responses.create(
            model="endless", input="hi", stream=True, background=True
        )
        async with stream:  # closed when the task is cancelled: the SDK's own clean-up
            async for event in stream:
                if event.type == "response.created":
                    ids.append(event.response.id)
                    opened += 1
                    if opened == n:
                        ready.set()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        await ready.wait()
        started = anyio.current_time()
        tg.cancel_scope.cancel()
    return {"ids": ids, "exit_s": anyio.current_time() - started}


async def guarded(client: openai.AsyncOpenAI, n: int, *, confirm: bool = True) -> dict[str, Any]:
    ids: list[str] = []
    opened = 0
    ready = anyio.Event()

    async def one(scope: tether.Scope) -> None:
        nonlocal opened
        async with tether.guarded_stream(scope, model="endless", input="hi") as stream:
            ids.append(stream.response_id or "")
            opened += 1
            if opened == n:
                ready.set()
            async for _ in stream:
                pass

    async with tether.open_scope(
        client, grace=GRACE, first_event_timeout=120.0, confirm=confirm
    ) as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one, scope)
            await ready.wait()
            started = anyio.current_time()
            scope.cancel()
    return {"ids": ids, "exit_s": anyio.current_time() - started}


async def guarded_unconfirmed(client: openai.AsyncOpenAI, n: int) -> dict[str, Any]:
    """The same with ``confirm=False``: the cancels' answers trusted, nothing read back."""
    return await guarded(client, n, confirm=False)


CONTENDERS = {
    "raw SDK (closed, not cancelled)": raw,
    "tether (scope.cancel())": guarded,
    "tether, confirm=False (no read-back)": guarded_unconfirmed,
}


async def measure(base_url: str, contender: str) -> dict[str, Any]:
    """In this (fresh) process: warm up with one stream, then run *contender* at scale."""
    run = CONTENDERS[contender]
    # 1,000 connects at once: on a loaded machine the SDK's 5 s connect timeout is too short
    # (both contenders alike; it changes nothing else).
    timeout = openai.Timeout(600.0, connect=60.0)
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key="sk-emulator", timeout=timeout
    ) as client:
        await run(client, 1)  # imports, schemas, the pool: what a long-lived process has
        warm = _rss_kb()
        result = await run(client, STREAMS)
        peak = _peak_kb()
        orphans = await still_generating(client, result["ids"])
        for response_id in result["ids"]:  # tidy up the raw SDK's orphans
            await client.with_options(max_retries=0).responses.cancel(response_id)
    return {
        "per_stream_kb": (peak - warm) / STREAMS,
        "exit_s": result["exit_s"],
        "orphans": orphans,
    }


def _child(base_url: str, contender: str, backend: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", base_url, contender, backend],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:  # show why: the child's traceback
        raise RuntimeError(f"{contender} on {backend} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict[str, Any], rounds: int) -> str:
    backends = list(results)
    lines = [
        f"Measured by `python benchmarks/bench_memory.py` ({rounds} rounds, medians, each "
        f"contender in a fresh process; Python {platform.python_version()}, openai "
        f"{openai.__version__}). {STREAMS:,} background streams opened at once and read to "
        f"`response.created`, then stopped; the emulator runs in another process.",
        "",
        "| peak memory per stream (over the warm process) | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in CONTENDERS:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{results[b][name]['per_stream_kb']:.1f} KB" for b in backends)
            + " |"
        )
    raw_name, tether_name, _ = CONTENDERS
    lines.append(
        "| tether over the raw SDK | "
        + " | ".join(
            f"+{results[b][tether_name]['per_stream_kb'] - results[b][raw_name]['per_stream_kb']:.1f} KB"
            for b in backends
        )
        + " |"
    )
    lines += [
        "",
        f"| after the stop (grace {GRACE:g} s) | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in CONTENDERS:
        lines.append(
            f"| {name}: exit | "
            + " | ".join(
                f"{results[b][name]['exit_s']:.2f} s ({results[b][name]['exit_s'] / GRACE:.2f}× grace)"
                for b in backends
            )
            + " |"
        )
        lines.append(
            f"| {name}: still generating on the server | "
            + " | ".join(str(results[b][name]["orphans"]) for b in backends)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Per-stream peak memory and exit time against grace, per contender and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(results)
    names = list(CONTENDERS)
    fig, (memory, exit_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [b + (i - (len(names) - 1) / 2) * width for b in range(len(backends))]
        kb = memory.bar(
            xs, [results[b][name]["per_stream_kb"] for b in backends], width, label=name
        )
        memory.bar_label(kb, fmt="%.1f KB", fontsize=8)
        ratio = exit_time.bar(
            xs, [results[b][name]["exit_s"] / GRACE for b in backends], width, label=name
        )
        exit_time.bar_label(ratio, fmt="%.2f×", fontsize=8)
    top_kb = max(results[b][n]["per_stream_kb"] for b in backends for n in names)
    memory.set_ylim(0, top_kb * 1.3)
    memory.set_xticks(range(len(backends)), backends)
    memory.set_ylabel("peak RSS per stream over the warm process (KB)")
    memory.set_title(f"{STREAMS:,} streams at once: memory")
    memory.legend(loc="upper left", fontsize=8)
    exit_time.axhline(0.5, color="red", linestyle=":", label="goal: 0.5× grace")
    top = max(results[b][n]["exit_s"] / GRACE for b in backends for n in names)
    exit_time.set_ylim(0, max(top, 0.5) * 1.4)
    exit_time.set_xticks(range(len(backends)), backends)
    exit_time.set_ylabel(f"stop → exit, vs grace = {GRACE:g} s (×)")
    exit_time.set_title(f"{STREAMS:,} streams stopped at once: exit time")
    exit_time.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "memory.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "memory.png")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.measure:
        base_url, contender, backend = args.measure
        print(json.dumps(anyio.run(measure, base_url, contender, backend=backend)))
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    assert server.stdin is not None
    try:
        base_url = server.stdout.readline().decode().strip()
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for _ in range(args.rounds):  # interleaved, so drift hits every contender alike
            for backend in ("asyncio", "trio"):
                for name in CONTENDERS:
                    sample = _child(base_url, name, backend)
                    samples.setdefault(backend, {}).setdefault(name, []).append(sample)
                    print(backend, name, sample, flush=True)
    finally:
        server.stdin.close()
        server.wait()
    results = {
        backend: {
            name: {
                key: statistics.median(s[key] for s in runs)
                for key in ("per_stream_kb", "exit_s", "orphans")
            }
            for name, runs in contenders.items()
        }
        for backend, contenders in samples.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "samples": samples}, indent=2) + "\n")
    args.doc.write_text(report(results, args.rounds), encoding="utf-8")
    plot(results, args.plot)
    print(report(results, args.rounds))


if __name__ == "__main__":
    main()
