"""The chaos soak: 10,000 guarded streams per backend, faults mixed in, every promise checked.

Runs seeded random schedules (``tests/chaos.py``) against the emulator on asyncio and on
trio, in rounds, and reports: streams, faults injected by kind, orphans, hangs, p99 cleanup
time over grace, connections left checked out, and peak memory per stream (tracemalloc).

Run: ``python benchmarks/soak.py [--streams 10000]``; writes ``docs/benchmarks/soak.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

import tether

ROOT = Path(__file__).resolve().parent.parent
MEMORY_ROUND = 500  # steps of the traced round that measures memory
sys.path.insert(0, str(ROOT))

from tests.chaos import (  # noqa: E402
    FAULTS,
    GRACE,
    HANGING_GRACE,
    TRIGGERS,
    Step,
    Verdict,
    emulator_for_chaos,
    random_schedule,
    run_schedule,
)


async def _one_round(seed: int, schedule: list[Step], concurrency: int) -> Verdict:
    """One round on a fresh emulator; nothing of it outlives the call (not even the ledger)."""
    with emulator_for_chaos(seed=seed) as emulator:
        async with emulator.async_client() as client:
            return await run_schedule(emulator, client, schedule, concurrency=concurrency)


async def soak(streams: int, round_size: int, seed: int, concurrency: int) -> dict[str, Any]:
    rng = random.Random(seed)
    totals: dict[str, Any] = {
        "streams": 0,
        "faults": dict.fromkeys(FAULTS, 0),
        "triggers": dict.fromkeys(TRIGGERS, 0),
        "violations": [],
        "orphans": 0,
        "orphans_excused": 0,
        "hangs": 0,
        "p99_cleanup_over_grace": 0.0,
        "p99_seconds_past_grace": 0.0,
        "connections_checked_out": 0,
    }
    started = time.perf_counter()
    round_number = 0
    while totals["streams"] < streams:
        n = min(round_size, streams - totals["streams"])
        round_number += 1
        # A fresh emulator per round: its ledger keeps every event of every response (it is a
        # ledger), and a 10,000-response ledger in this process means long GC pauses.
        verdict = await _one_round(seed + round_number, random_schedule(rng, n), concurrency)
        totals["streams"] += verdict.streams
        for kind, count in verdict.faults.items():
            totals["faults"][kind] += count
        for kind, count in verdict.triggers.items():
            totals["triggers"][kind] += count
        totals["violations"] += verdict.violations
        totals["orphans"] += verdict.orphans
        totals["orphans_excused"] += verdict.orphans_excused
        totals["hangs"] += verdict.hangs
        totals["connections_checked_out"] = max(
            totals["connections_checked_out"], verdict.connections_checked_out
        )
        totals["p99_cleanup_over_grace"] = max(
            totals["p99_cleanup_over_grace"], verdict.p99_cleanup_over_grace
        )
        totals["p99_seconds_past_grace"] = max(
            totals["p99_seconds_past_grace"], verdict.p99_seconds_past_grace
        )
        print(
            f"  {totals['streams']:>6} streams, {totals['orphans']} orphans, "
            f"{totals['hangs']} hangs, {len(totals['violations'])} violations",
            flush=True,
        )
    totals["seconds"] = time.perf_counter() - started
    # Memory, in a round of its own: tracemalloc slows Python several-fold, so it stays off
    # during the timed rounds; the caches are warm by now, so what is left after it is a leak.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    baseline = tracemalloc.get_traced_memory()[0]
    memory_round = await _one_round(seed, random_schedule(rng, MEMORY_ROUND), concurrency)
    peak = tracemalloc.get_traced_memory()[1] - baseline
    gc.collect()
    after = tracemalloc.take_snapshot()
    retained = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    tracemalloc.stop()
    if not memory_round.ok:
        totals["violations"] += memory_round.violations or ["the memory round failed"]
    # tether must hold nothing once its streams ended and the emulators are gone.
    totals["streams_alive_after"] = sum(
        isinstance(o, tether.GuardedStream) for o in gc.get_objects()
    )
    totals["peak_kib_per_stream"] = peak / MEMORY_ROUND / 1024
    totals["retained_kib_after_run"] = retained / 1024
    return totals


def render(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    backends = list(results)
    rows = [
        ("steps (a guarded stream, or a race of 3)", lambda r: f"{r['streams']:,}"),
        ("orphans (cancel endpoint reachable)", lambda r: str(r["orphans"])),
        (
            "responses left by a hanging cancel (excused, then cleaned)",
            lambda r: str(r["orphans_excused"]),
        ),
        ("hangs (cleanup > grace + 1 s)", lambda r: str(r["hangs"])),
        ("swallowed cancellations / masked exceptions", lambda r: str(len(r["violations"]))),
        ("connections left checked out", lambda r: str(r["connections_checked_out"])),
        ("guarded streams still in memory after the run", lambda r: str(r["streams_alive_after"])),
        ("p99 cleanup time / grace", lambda r: f"{r['p99_cleanup_over_grace']:.3f}"),
        (
            "p99 time past grace (scheduling slack)",
            lambda r: f"{r['p99_seconds_past_grace'] * 1000:.0f} ms",
        ),
        (
            f"peak memory per step, emulator included ({MEMORY_ROUND}-step traced round)",
            lambda r: f"{r['peak_kib_per_stream']:.1f} KiB",
        ),
        (
            "memory still allocated after that round (caches warm)",
            lambda r: f"{r['retained_kib_after_run']:+.0f} KiB",
        ),
        ("wall time of the timed rounds", lambda r: f"{r['seconds']:.0f} s"),
    ]
    lines = [
        f"Measured by `python benchmarks/soak.py --streams {args.streams}` (seed {args.seed}, "
        f"{args.concurrency} streams at once; "
        f"grace {GRACE} s, {HANGING_GRACE} s for hanging cancels; Python {sys.version.split()[0]}).",
        "",
        "| | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    lines += [
        f"| {name} | " + " | ".join(fn(results[b]) for b in backends) + " |" for name, fn in rows
    ]
    lines += ["", "Faults injected, by kind:", "", "| fault | " + " | ".join(backends) + " |"]
    lines.append("|---|" + "---|" * len(backends))
    lines += [
        f"| {kind} | " + " | ".join(str(results[b]["faults"][kind]) for b in backends) + " |"
        for kind in FAULTS
    ]
    lines += ["", "Triggers, by kind:", "", "| trigger | " + " | ".join(backends) + " |"]
    lines.append("|---|" + "---|" * len(backends))
    lines += [
        f"| {kind} | " + " | ".join(str(results[b]["triggers"][kind]) for b in backends) + " |"
        for kind in TRIGGERS
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--round", type=int, default=1000, help="streams per round")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=20,
        help="streams at once (the emulator shares this process: past ~50 on 2 cores, CPU "
        "starvation, not tether, dominates cleanup times)",
    )
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "soak.md")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for backend in ("asyncio", "trio"):
        print(f"{backend}:", flush=True)
        results[backend] = anyio.run(
            soak, args.streams, args.round, args.seed, args.concurrency, backend=backend
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = render(results, args)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(text)
    print(text)
    bad = [
        b
        for b, r in results.items()
        if r["orphans"]
        or r["hangs"]
        or r["violations"]
        or r["connections_checked_out"]
        or r["streams_alive_after"]
    ]
    for b in bad:
        print(f"{b}: {results[b]['violations'][:10]}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
