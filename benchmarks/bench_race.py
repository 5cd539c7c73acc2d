"""Races and hedges, in one run, on asyncio and trio, against the emulator.

1. Cancelling the losers of a race: time from the decision to every loser confirmed
   cancelled, for N = 100 losers relative to N = 1 (the real ``race`` path: 101 attempts,
   one fast winner), versus a loop that cancels 100 guarded streams one after another.
   Run with a 100 ms server-side cancel (a real API's cancel takes a network round trip and
   more) and with an instant one (then what is measured is the emulator's and the client's
   own per-request CPU, in one Python thread each).
2. Hedging under heavy tails: 500 requests on a model whose time to first token is
   lognormal (median 50 ms, sigma 1.0), 25 in flight at a time; time to completion
   (p50/p99/p99.9) unhedged, hedged with a fixed stagger at the model's p90 and p95, and
   with ``tether.adaptive``; extra requests and extra output tokens from the ledger.

Run: ``python benchmarks/bench_race.py`` (writes ``docs/benchmarks/race.md``,
``docs/benchmarks/hedging_cdf.png`` and ``benchmarks/results/race.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import anyio
import openai

from tether import Adaptive, adaptive, first_token, guarded_stream, race
from tether.testing import Faults, Lognormal, Model, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
LOSERS = 100
ROUNDS = 3
REQUESTS = 500
IN_FLIGHT = 10
MEDIAN, SIGMA = 0.05, 1.0
LENGTH = 20
Z = {0.75: 0.6745, 0.9: 1.2816, 0.95: 1.6449}


def cancel_models(delay: float) -> dict[str, Model]:
    return {
        "winner": Model(ttft=0.3, tokens_per_s=1e5, length=5),
        "loser": Model(ttft=0.0, tokens_per_s=20.0, length=2000, faults=Faults(cancel_delay=delay)),
    }


# ------------------------------------------------------------------ 1. cancelling


async def race_cleanup(client: openai.AsyncOpenAI, losers: int) -> float:
    """Seconds from the decision to the last loser's confirmed cancel, through ``race``."""
    requests = [{"model": "winner", "input": "x"}] + [{"model": "loser", "input": "x"}] * losers
    result = await race(client, requests, grace=30)
    assert all(loser.receipt and loser.receipt.status == "cancelled" for loser in result.losers)
    return max(loser.outcome.ended_at for loser in result.losers if loser.outcome) - (
        result.decided_at
    )


async def sequential_cleanup(client: openai.AsyncOpenAI, losers: int) -> float:
    """The same losers, cancelled one after another by a loop of ``await stream.cancel()``."""
    async with contextlib.AsyncExitStack() as stack:
        streams = []
        for _ in range(losers):
            stream = await stack.enter_async_context(
                guarded_stream(client, model="loser", input="x", grace=30)
            )
            streams.append(stream)
        for stream in streams:
            async for event in stream:
                if event.type.endswith(".delta"):
                    break
        started = anyio.current_time()
        for stream in streams:
            receipt = await stream.cancel()
            assert receipt.status == "cancelled"
        return anyio.current_time() - started


async def bare_posts(emu: ResponsesEmulator, client: openai.AsyncOpenAI, count: int) -> float:
    """The floor: ``count`` concurrent ``responses.cancel`` POSTs (raw SDK), nothing else."""
    ids = [
        (await client.responses.create(model="loser", input="x", background=True)).id
        for _ in range(count)
    ]
    await emu.wait_for(lambda ledger: all(ledger[i].tokens_generated > 0 for i in ids))
    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for response_id in ids:
            tg.start_soon(client.responses.cancel, response_id)
    return anyio.current_time() - started


async def bench_cancel(delay: float) -> dict[str, float]:
    async with ResponsesEmulator(models=cancel_models(delay), seed=3) as emu:
        async with emu.async_client() as client:
            await race_cleanup(client, LOSERS)  # warm up: connections, imports
            one = [await race_cleanup(client, 1) for _ in range(ROUNDS)]
            many = [await race_cleanup(client, LOSERS) for _ in range(ROUNDS)]
            floor = [await bare_posts(emu, client, LOSERS) for _ in range(ROUNDS)]
            loop = await sequential_cleanup(client, LOSERS)
            orphans = len(emu.ledger.orphans())
    one_ms, many_ms = statistics.median(one) * 1e3, statistics.median(many) * 1e3
    floor_ms = statistics.median(floor) * 1e3
    return {
        "one_loser_ms": one_ms,
        "race_losers_ms": many_ms,
        "race_ratio": many_ms / one_ms,
        "bare_posts_ms": floor_ms,
        "bare_posts_ratio": floor_ms / one_ms,
        "sequential_ms": loop * 1e3,
        "sequential_ratio": loop * 1e3 / one_ms,
        "orphans": orphans,
    }


# --------------------------------------------------------------------- 2. hedging


def tail_model() -> Model:
    return Model(tokens_per_s=2000.0, length=LENGTH, latency=Lognormal(median=MEDIAN, sigma=SIGMA))


def contenders() -> dict[str, tuple[int, float | Adaptive | None]]:
    fixed: dict[str, tuple[int, float | Adaptive | None]] = {}
    for q in (0.75, 0.9, 0.95):
        stagger = MEDIAN * math.exp(SIGMA * Z[q])
        fixed[f"fixed stagger {stagger * 1e3:.0f} ms (p{q * 100:g})"] = (2, stagger)
    return {
        "unhedged": (1, None),
        **fixed,
        "adaptive() (quantile=0.9, budget=0.05)": (2, adaptive()),
        "adaptive(quantile=0.95, budget=0.1)": (2, adaptive(quantile=0.95, budget=0.1)),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def hedged_requests(
    client: openai.AsyncOpenAI, attempts: int, stagger: float | Adaptive | None
) -> list[float]:
    """Seconds from each race's start to its winner's completion, IN_FLIGHT races at a time."""
    times: list[float] = []
    requests = [{"model": "tail", "input": "x"}] * attempts
    send, receive = anyio.create_memory_object_stream[int](REQUESTS)
    for i in range(REQUESTS):
        send.send_nowait(i)
    send.close()

    async def worker() -> None:
        async for _ in receive:
            result = await race(client, requests, win=first_token, stagger=stagger)
            outcome = result.winner.outcome
            assert outcome is not None
            times.append(outcome.ended_at - result.started_at)

    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker)
    return times


async def bench_hedge() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (attempts, stagger) in contenders().items():
        async with ResponsesEmulator(models={"tail": tail_model()}, seed=11) as emu:
            async with emu.async_client() as client:
                times = await hedged_requests(client, attempts, stagger)
                await emu.wait_for(lambda ledger: not any(r.generating for r in ledger))
                generated = sum(r.tokens_generated for r in emu.ledger)
                sent = len(emu.ledger)
                orphans = len(emu.ledger.orphans())
        learned = ""
        if isinstance(stagger, Adaptive):
            throttle = stagger.throttle
            learned = (
                f"learned {stagger.stagger_for('tail') * 1e3:.0f} ms; "
                f"{throttle.hedges} hedges, {throttle.refused} refusals by the budget"
            )
        out[name] = {
            "learned": learned,
            "p50_ms": percentile(times, 0.5) * 1e3,
            "p99_ms": percentile(times, 0.99) * 1e3,
            "p999_ms": percentile(times, 0.999) * 1e3,
            "extra_requests": sent / REQUESTS - 1,
            "extra_tokens": generated / (REQUESTS * LENGTH) - 1,
            "orphans": orphans,
            "times_ms": [t * 1e3 for t in times],
        }
    base = out["unhedged"]["p99_ms"]
    for row in out.values():
        row["p99_ratio"] = row["p99_ms"] / base
    return out


async def run_backend() -> dict[str, Any]:
    return {
        "cancel_100ms": await bench_cancel(0.1),
        "cancel_instant": await bench_cancel(0.0),
        "hedging": await bench_hedge(),
    }


# ---------------------------------------------------------------------- reporting


def render(results: dict[str, dict[str, Any]]) -> str:
    backends = list(results)
    head = " | ".join(backends)
    lines = [
        f"Measured by `python benchmarks/bench_race.py` (Python {sys.version.split()[0]}, "
        f"openai {openai.__version__}; medians of {ROUNDS} races).",
        "",
        f"**Cancelling the losers of a race**: decision to every loser confirmed cancelled, "
        f"{LOSERS} losers against 1.",
        "",
        f"| server-side cancel takes | contender | {head} |",
        "|---|---|" + "---|" * len(backends),
    ]
    for key, label in (("cancel_100ms", "100 ms"), ("cancel_instant", "~0 ms")):
        rows = [
            ("`race`, 1 loser", lambda r: f"{r['one_loser_ms']:.1f} ms"),
            (
                f"`race`, {LOSERS} losers",
                lambda r: f"{r['race_losers_ms']:.1f} ms ({r['race_ratio']:.2f}×)",
            ),
            (
                f"floor: {LOSERS} concurrent bare cancel POSTs (raw SDK)",
                lambda r: f"{r['bare_posts_ms']:.1f} ms ({r['bare_posts_ratio']:.2f}×)",
            ),
            (
                f"loop of `await stream.cancel()`, {LOSERS} streams",
                lambda r: f"{r['sequential_ms']:.0f} ms ({r['sequential_ratio']:.0f}×)",
            ),
        ]
        for contender, cell in rows:
            cells = " | ".join(cell(results[b][key]) for b in backends)
            lines.append(f"| {label} | {contender} | {cells} |")
    lines += [
        "",
        "The losers are cancelled concurrently (the loop is ~N× one cancel when the server "
        "takes its time); what remains above 1× is per-request CPU in one Python thread on "
        "each side (the client's HTTP stack, the emulator), which 100 concurrent bare cancel "
        "POSTs pay as well: the floor row.",
        "",
        f"**Hedging under heavy tails**: {REQUESTS} requests, {IN_FLIGHT} in flight, time to "
        f"first token lognormal (median {MEDIAN * 1e3:.0f} ms, sigma {SIGMA}), "
        f"{LENGTH} output tokens; `race(..., win=first_token)` with two attempts when hedged. "
        "Time to completion of the winner; extra requests and output tokens from the ledger.",
        "",
    ]
    for backend in backends:
        hedging = results[backend]["hedging"]
        lines += [
            f"| {backend} | p50 | p99 | p99.9 | p99 vs unhedged | extra requests | extra tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in hedging.items():
            lines.append(
                f"| {name} | {row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | "
                f"{row['p999_ms']:.0f} ms | {row['p99_ratio']:.2f}× | "
                f"{row['extra_requests']:.1%} | {row['extra_tokens']:.1%} |"
            )
        lines.append("")
        notes = [f"{name}: {row['learned']}" for name, row in hedging.items() if row["learned"]]
        lines += [f"{backend}, adaptive: " + "; ".join(notes) + ".", ""]
    orphans = sum(
        results[b][k]["orphans"] for b in backends for k in ("cancel_100ms", "cancel_instant")
    ) + sum(row["orphans"] for b in backends for row in results[b]["hedging"].values())
    lines += [f"Orphans left on the emulator over the whole run: {orphans}.", ""]
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, tail) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"asyncio": "-", "trio": "--"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for backend, data in results.items():
        for color, (name, row) in zip(colors, data["hedging"].items(), strict=False):
            xs = sorted(row["times_ms"])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            label = f"{name} ({backend})"
            cdf.plot(xs, ys, styles[backend], color=color, label=label, linewidth=1.2)
            tail.plot(xs, [1 - y + 1 / len(xs) for y in ys], styles[backend], color=color)
    cdf.set_xscale("log")
    cdf.set_xlabel("time to completion (ms)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("CDF")
    tail.set_xscale("log")
    tail.set_yscale("log")
    tail.set_xlabel("time to completion (ms)")
    tail.set_ylabel("fraction slower (1 - CDF)")
    tail.set_title("the tail")
    cdf.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"Hedging a lognormal model (median {MEDIAN * 1e3:.0f} ms, sigma {SIGMA})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "race.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "race.md")
    parser.add_argument(
        "--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "hedging_cdf.png"
    )
    args = parser.parse_args()
    results = {backend: anyio.run(run_backend, backend=backend) for backend in ("asyncio", "trio")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(json.dumps(results))
    for backend in summary.values():
        for row in backend["hedging"].values():
            del row["times_ms"]  # the raw samples only feed the plot
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(results))
    plot(results, args.plot)
    print(render(results))


if __name__ == "__main__":
    main()
