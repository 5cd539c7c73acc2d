"""Races and hedges, in one run, on asyncio and trio, against the emulator.

1. Cancelling the losers of a race: time from the decision to every loser confirmed
   cancelled (``RaceResult.losers_confirmed_at - decided_at``), for N = 100 losers relative
   to N = 1 (the real ``race`` path: 101 attempts, one fast winner), versus the hand-written
   floor (100 raw SDK streams closed and cancelled concurrently, with each side's CPU per
   cancel) and a loop that cancels 100 guarded streams one after another; the emulator in
   another process. Run with a 200 ms server-side cancel (a
   real API's cancel takes a network round trip and more) and with an instant one (then
   what is measured is the emulator's and the client's own per-request CPU, in one Python
   thread each).
2. Hedging under heavy tails: 2,000 requests on a model whose time to first token is
   lognormal (median 100 ms, p99 2 s), 10 in flight at a time, ``win="first_token"``; time
   to completion (p50/p99/p99.9) unhedged, hedged with fixed staggers, and with
   ``tether.adaptive`` (its defaults, and the old ones); extra requests and extra output
   tokens from the ledger.

Run: ``python benchmarks/bench_race.py`` (writes ``docs/benchmarks/race.md``,
``docs/benchmarks/race_cancel.png``, ``docs/benchmarks/hedging_cdf.png`` and
``benchmarks/results/race.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai

from _orphans import still_generating
from tether import adaptive, guarded_stream, open_scope, race
from tether.races import AdaptiveStagger
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
LOSERS = 100
ROUNDS = 3
REQUESTS = 2000
"""Races per run and contender. A run's p99 is its ``REQUESTS // 100`` slowest: at 500 the
unhedged p99 of this model (2 s) came out anywhere from 1.22 to 2.2 s by seed, and every
ratio to it with it; at 2,000 it came out 1.68-2.42 s (in theory, half the spread)."""
IN_FLIGHT = 10
WARM_UP = 200
"""Races a long-lived ``adaptive()`` has seen before the warm row's measured requests."""
MEDIAN, P99 = 0.1, 2.0
SIGMA = math.log(P99 / MEDIAN) / 2.3263  # lognormal: p99 = median * exp(2.3263 sigma)
LENGTH = 20
CANCEL_DELAY = 0.2
WINNER_TTFT = 3.0
Z = {0.8: 0.8416, 0.9: 1.2816, 0.95: 1.6449}


def cancel_models(delay: float) -> dict[str, EmulatedModel]:
    return {
        # after every loser opened (100 opens take up to ~1.5 s of client CPU here);
        # race_cleanup checks that each one had
        "winner": EmulatedModel(ttft=WINNER_TTFT, tokens_per_s=1e5, length=5),
        "loser": EmulatedModel(
            ttft=0.0, tokens_per_s=20.0, length=2000, faults=Faults(cancel_delay=delay)
        ),
    }


# ------------------------------------------------------------------ 1. cancelling


async def race_cleanup(
    client: openai.AsyncOpenAI, losers: int, ids: list[str], *, confirm: bool = True
) -> float:
    """Seconds from the decision to the last loser's confirmed cancel, through ``race``
    (``confirm=False``: in an ``open_scope(confirm=False)``, no read-back after the cancel)."""
    requests = [{"model": "winner", "input": "x"}] + [{"model": "loser", "input": "x"}] * losers
    async with open_scope(client, confirm=confirm) as scope:
        result = await race(scope, requests, grace=30)
    # every loser was open (had its response id) when the winner won, and is cancelled:
    # else fewer than *losers* cancels were measured
    statuses = [loser.receipt.status if loser.receipt else None for loser in result.losers]
    assert statuses == ["cancelled"] * losers, statuses
    ids += [a.outcome.response_id for a in result.attempts if a.outcome and a.outcome.response_id]
    return result.losers_confirmed_at - result.decided_at


async def _open_losers(client: openai.AsyncOpenAI, count: int, ids: list[str]) -> list[Any]:
    """*count* raw SDK background streams of the loser model, each read to its first delta."""
    streams: list[Any] = []

    async def one() -> None:
        stream = await client.responses.create(
            model="loser", input="x", stream=True, background=True
        )
        async for event in stream:
            if event.type == "response.created":
                ids.append(event.response.id)
            elif event.type.endswith(".delta"):
                break
        streams.append(stream)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return streams


async def sequential_cleanup(client: openai.AsyncOpenAI, losers: int, ids: list[str]) -> float:
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
            ids.append(stream.response_id or "")
        started = anyio.current_time()
        for stream in streams:
            receipt = await stream.cancel()
            assert receipt.status == "cancelled"
        return anyio.current_time() - started


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def floor_posts(
    client: openai.AsyncOpenAI, count: int, server: int, ids: list[str], *, read_back: bool = False
) -> tuple[float, float, float]:
    """The hand-written best with the SDK: ``count`` raw streams closed, then ``count``
    concurrent ``responses.cancel`` POSTs (with *read_back*, each followed by the
    ``responses.retrieve`` that ``race``'s default ``confirm=True`` sends: the same work).
    (wall s, client CPU s, server CPU s)"""
    mine: list[str] = []
    streams = await _open_losers(client, count, mine)
    ids += mine
    started, cpu, server_cpu = anyio.current_time(), time.process_time(), _cpu_s(server)
    async with anyio.create_task_group() as tg:
        for stream, response_id in zip(streams, mine, strict=True):

            async def stop(stream: Any = stream, response_id: str = response_id) -> None:
                await stream.close()
                await client.responses.cancel(response_id)
                if read_back:
                    await client.responses.retrieve(response_id)

            tg.start_soon(stop)
    return (
        anyio.current_time() - started,
        time.process_time() - cpu,
        _cpu_s(server) - server_cpu,
    )


@contextlib.contextmanager
def fixed_cancel_slots(slots: int | None) -> Iterator[None]:
    """Run ``race`` with *slots* cancel slots per client (the code before the pool-following
    cap: 64), or as the library sets them (None), on fresh limiters either way."""
    import weakref

    from tether import _cancel

    def fresh() -> None:
        _cancel._limiters.set(weakref.WeakKeyDictionary())  # pyright: ignore[reportPrivateUsage]

    before = _cancel._IN_FLIGHT  # pyright: ignore[reportPrivateUsage]
    _cancel._IN_FLIGHT = slots  # pyright: ignore[reportPrivateUsage]
    fresh()
    try:
        yield
    finally:
        _cancel._IN_FLIGHT = before  # pyright: ignore[reportPrivateUsage]
        fresh()


BEFORE_SLOTS = 64


async def bench_cancel(base_url: str, server: int, rounds: int) -> dict[str, float]:
    ids: list[str] = []
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        await race_cleanup(client, LOSERS, ids)  # warm up: connections, imports
        await floor_posts(client, LOSERS, server, ids)
        one = [await race_cleanup(client, 1, ids) for _ in range(rounds)]
        many: list[float] = []
        before: list[float] = []
        floor: list[tuple[float, float, float]] = []
        unconfirmed: list[float] = []
        floor_read_back: list[float] = []
        for _ in range(rounds):  # interleaved: the machine's load drifts within a run
            many.append(await race_cleanup(client, LOSERS, ids))
            with fixed_cancel_slots(BEFORE_SLOTS):
                before.append(await race_cleanup(client, LOSERS, ids))
            floor.append(await floor_posts(client, LOSERS, server, ids))
            unconfirmed.append(await race_cleanup(client, LOSERS, ids, confirm=False))
            floor_read_back.append(
                (await floor_posts(client, LOSERS, server, ids, read_back=True))[0]
            )
        loop = await sequential_cleanup(client, LOSERS, ids)
        orphans = await still_generating(client, [i for i in ids if i])
    one_ms, many_ms = statistics.median(one) * 1e3, statistics.median(many) * 1e3
    before_ms = statistics.median(before) * 1e3
    floor_ms = statistics.median(f[0] for f in floor) * 1e3
    unconfirmed_ms = statistics.median(unconfirmed) * 1e3
    read_back_ms = statistics.median(floor_read_back) * 1e3
    return {
        "rounds": rounds,
        "race_vs_hand_read_back": many_ms / read_back_ms,
        "unconfirmed_ms": unconfirmed_ms,
        "unconfirmed_ratio": unconfirmed_ms / one_ms,
        "unconfirmed_vs_hand": unconfirmed_ms / floor_ms,
        "unconfirmed_runs_ms": [t * 1e3 for t in unconfirmed],
        "hand_read_back_ms": read_back_ms,
        "hand_read_back_ratio": read_back_ms / one_ms,
        "hand_read_back_runs_ms": [t * 1e3 for t in floor_read_back],
        "one_loser_ms": one_ms,
        "race_losers_ms": many_ms,
        "race_ratio": many_ms / one_ms,
        "race_vs_hand": many_ms / floor_ms,
        "race_runs_ms": [t * 1e3 for t in many],
        "before_losers_ms": before_ms,
        "before_ratio": before_ms / one_ms,
        "before_vs_hand": before_ms / floor_ms,
        "before_runs_ms": [t * 1e3 for t in before],
        "bare_posts_ms": floor_ms,
        "bare_posts_ratio": floor_ms / one_ms,
        "bare_posts_runs_ms": [f[0] * 1e3 for f in floor],
        "client_cpu_per_cancel_ms": statistics.median(f[1] for f in floor) * 1e3 / LOSERS,
        "server_cpu_per_cancel_ms": statistics.median(f[2] for f in floor) * 1e3 / LOSERS,
        "sequential_ms": loop * 1e3,
        "sequential_ratio": loop * 1e3 / one_ms,
        "orphans": orphans,
    }


def serve(delay: float) -> None:
    """An emulator process for the cancelling part: print its URL, serve until stdin closes."""
    with ResponsesEmulator(models=cancel_models(delay), seed=3) as emu:
        print(emu.base_url, flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def served(delay: float) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of an emulator in another process, so its CPU is not the client's."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        yield server.stdout.readline().strip(), server.pid
    finally:
        server.stdin.close()
        server.wait()


# --------------------------------------------------------------------- 2. hedging


def tail_model() -> EmulatedModel:
    return EmulatedModel(
        tokens_per_s=2000.0,
        length=LENGTH,
        latency=EmulatedModel.Lognormal(median=MEDIAN, sigma=SIGMA),
    )


def contenders() -> dict[str, tuple[int, float | AdaptiveStagger | None, int]]:
    """name -> (attempts, stagger, races run before the measured ones with the same stagger)."""

    def at(q: float) -> float:
        return MEDIAN * math.exp(SIGMA * Z[q])

    return {
        "unhedged": (1, None, 0),
        f"2 attempts, fixed stagger {at(0.9) * 1e3:.0f} ms (p90)": (2, at(0.9), 0),
        f"3 attempts, fixed stagger {at(0.8) * 1e3:.0f} ms (p80)": (3, at(0.8), 0),
        "2 attempts, adaptive(0.9, budget=0.05) (old defaults)": (
            2,
            adaptive(quantile=0.9, budget=0.05),
            0,
        ),
        "3 attempts, adaptive() (defaults: 0.8, budget=0.3)": (3, adaptive(), 0),
        f"3 attempts, adaptive() warm ({WARM_UP} races before, as a module-level one)": (
            3,
            adaptive(),
            WARM_UP,
        ),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def hedged_requests(
    client: openai.AsyncOpenAI,
    attempts: int,
    stagger: float | AdaptiveStagger | None,
    count: int = REQUESTS,
) -> list[float]:
    """Seconds from each race's start to its winner's completion, IN_FLIGHT races at a time."""
    times: list[float] = []
    requests = [{"model": "tail", "input": "x"}] * attempts
    send, receive = anyio.create_memory_object_stream[int](count)
    for i in range(count):
        send.send_nowait(i)
    send.close()

    async def worker() -> None:
        async for _ in receive:
            result = await race(client, requests, win="first_token", stagger=stagger)
            outcome = result.winner.outcome
            assert outcome is not None
            times.append(outcome.ended_at - result.started_at)

    async with anyio.create_task_group() as tg:
        for _ in range(IN_FLIGHT):
            tg.start_soon(worker)
    return times


async def bench_hedge(seeds: int) -> dict[str, dict[str, Any]]:
    """Every contender once per seed (emulator seeds 11, 12...); a fresh ``adaptive`` each run.

    A row is the first seed's run (its samples feed the plot), with each figure's per-run
    values in ``runs`` and their worst (``*_max``): the budget must hold in every run. The
    p99 of every run's requests pooled (``p99_pooled_*``: seeds times REQUESTS samples) is the
    steadier estimate of the policy's tail, beside the per-run worst.
    """
    runs = [await hedge_run(11 + i) for i in range(seeds)]
    out = runs[0]
    for name, row in out.items():
        for key in ("p99_ratio", "p99_ms", "extra_requests", "extra_tokens"):
            values = [run[name][key] for run in runs]
            row[f"{key}_runs"] = values
            row[f"{key}_max"] = max(values)
        row["orphans"] = sum(run[name]["orphans"] for run in runs)
        pooled = [t for run in runs for t in run[name]["times_ms"]]
        row["p99_pooled_ms"] = percentile(pooled, 0.99)
    base = out["unhedged"]["p99_pooled_ms"]
    for row in out.values():
        row["p99_pooled_ratio"] = row["p99_pooled_ms"] / base
    return out


async def hedge_run(seed: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (attempts, stagger, warm_up) in contenders().items():
        async with ResponsesEmulator(models={"tail": tail_model()}, seed=seed) as emu:
            async with emu.async_client() as client:
                if warm_up:  # not timed; the measured window's extras are counted apart
                    await hedged_requests(client, attempts, stagger, warm_up)
                    await emu.wait_for(lambda ledger: not any(r.generating for r in ledger))
                before = list(emu.ledger)
                times = await hedged_requests(client, attempts, stagger)
                await emu.wait_for(lambda ledger: not any(r.generating for r in ledger))
                generated = sum(r.tokens_generated for r in emu.ledger)
                sent = len(emu.ledger)
                orphans = len(emu.ledger.orphans())
        if before:
            whole = generated / ((REQUESTS + warm_up) * LENGTH) - 1
            generated -= sum(r.tokens_generated for r in before)
            sent -= len(before)
        learned = ""
        if isinstance(stagger, AdaptiveStagger):
            throttle = stagger.throttle
            learned = (
                f"learned {stagger.stagger_for('tail') * 1e3:.0f} ms; "
                f"{throttle.hedges} hedges, {throttle.refused} refusals by the request budget"
            )
            cost = getattr(stagger, "cost", None)  # None before the token budget (--before)
            if cost is not None:
                learned += (
                    f", {cost.refused} by the token budget; losers' tokens seen {cost.spent} "
                    f"of {cost.won} won"
                )
            if before:
                learned += f" (warm-up included); extra tokens over all {REQUESTS + warm_up} races {whole:.1%}"
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


async def run_backend(
    servers: dict[str, tuple[str, int]] | None, seeds: int, rounds: int = ROUNDS
) -> dict[str, Any]:
    empty: dict[str, Any] = {}
    return {
        "cancel_200ms": await bench_cancel(*servers["cancel_200ms"], rounds) if servers else empty,
        "cancel_instant": (
            await bench_cancel(*servers["cancel_instant"], rounds) if servers else empty
        ),
        "hedging": await bench_hedge(seeds) if seeds else {},
    }


# ---------------------------------------------------------------------- reporting


def spread(runs_ms: list[float]) -> str:
    """The rounds' range, for the run-to-run spread."""
    return f"[{min(runs_ms):.0f}-{max(runs_ms):.0f}]"


def worst(row: dict[str, Any], key: str, fmt: str) -> str:
    """The worst run's figure, then every run's range."""
    runs = row[f"{key}_runs"]
    return f"{fmt.format(max(runs))} [{fmt.format(min(runs))}-{fmt.format(max(runs))}]"


def render(results: dict[str, dict[str, Any]]) -> str:
    backends = list(results)
    head = " | ".join(backends)
    lines = [
        f"Measured by `python benchmarks/bench_race.py` (Python {sys.version.split()[0]}, "
        f"openai {openai.__version__}; medians of "
        f"{results[backends[0]]['cancel_200ms'].get('rounds', ROUNDS)} races).",
        "",
        f"**Cancelling the losers of a race**: decision to every loser confirmed cancelled, "
        f"{LOSERS} losers against 1 (×), and against the same {LOSERS} losers stopped by hand "
        "in the same run (× by hand); [the rounds' range].",
        "",
        f"| server-side cancel takes | contender | {head} |",
        "|---|---|" + "---|" * len(backends),
    ]
    cancelling = bool(results[backends[0]]["cancel_200ms"])  # not with --hedge-only
    for key, label in (
        ("cancel_200ms", f"{CANCEL_DELAY * 1e3:.0f} ms"),
        ("cancel_instant", "~0 ms"),
    ):
        if not cancelling:
            break
        rows = [
            ("`race`, 1 loser", lambda r: f"{r['one_loser_ms']:.1f} ms"),
            (
                f"`race`, {LOSERS} losers (default: each cancel read back)",
                lambda r: (
                    f"{r['race_losers_ms']:.1f} ms ({r['race_ratio']:.2f}×; "
                    f"{r['race_vs_hand_read_back']:.2f}× by hand with read-back, "
                    f"{r['race_vs_hand']:.2f}× by hand) {spread(r['race_runs_ms'])}"
                ),
            ),
            (
                f"`race`, {LOSERS} losers, `open_scope(confirm=False)` (no read-back)",
                lambda r: (
                    f"{r['unconfirmed_ms']:.1f} ms ({r['unconfirmed_ratio']:.2f}×; "
                    f"{r['unconfirmed_vs_hand']:.2f}× by hand) "
                    f"{spread(r['unconfirmed_runs_ms'])}"
                ),
            ),
            (
                f"before: `race`, {LOSERS} losers, {BEFORE_SLOTS} cancel slots",
                lambda r: (
                    f"{r['before_losers_ms']:.1f} ms ({r['before_ratio']:.2f}×; "
                    f"{r['before_vs_hand']:.2f}× by hand) {spread(r['before_runs_ms'])}"
                ),
            ),
            (
                f"by hand: {LOSERS} raw SDK streams closed and cancelled in one task group",
                lambda r: (
                    f"{r['bare_posts_ms']:.1f} ms ({r['bare_posts_ratio']:.2f}×) "
                    f"{spread(r['bare_posts_runs_ms'])}"
                ),
            ),
            (
                f"by hand, with read-back: {LOSERS} streams closed, each cancel then `responses.retrieve` (the same "
                "work as `race`'s default)",
                lambda r: (
                    f"{r['hand_read_back_ms']:.1f} ms ({r['hand_read_back_ratio']:.2f}×) "
                    f"{spread(r['hand_read_back_runs_ms'])}"
                ),
            ),
            (
                "by hand: CPU per cancel, client / emulator",
                lambda r: (
                    f"{r['client_cpu_per_cancel_ms']:.2f} / {r['server_cpu_per_cancel_ms']:.2f} ms"
                ),
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
        f"The emulator runs in another process. The winner wins {WINNER_TTFT:.0f} s in, once "
        "every loser streams (each run checks that all of them were cancelled). "
        "The losers are cancelled concurrently (the "
        "loop is ~N× one cancel when the server takes its time). Compare like with like: "
        "`race`'s default reads every `cancelled` answer back (`confirm=True`: two requests "
        "per loser), so its hand-written peer is the row *with read-back*; with "
        "`open_scope(confirm=False)` it sends what the plain hand-written loop sends. What "
        "remains above 1× is "
        "per-request CPU in one Python thread on each side, which the hand-written floor pays "
        "as well: N requests cost N × (client CPU per cancel) before the last one has left "
        "and again as their answers come back, against the one cancel's 200 ms wait. At the "
        "client's CPU per cancel shown, 1.2× for 100 losers would need under 0.2 ms per "
        "request and side; most of the client's share is its HTTP pool (see the design "
        "notes, *Where the fan-out's limit is*).",
        "",
    ]
    if not cancelling:
        lines = lines[:2]
    seeds = len(next(iter(results[backends[0]]["hedging"].values()), {}).get("p99_ratio_runs", []))
    if seeds:  # not with --cancel-only
        lines += [
            f"**Hedging under heavy tails**: {REQUESTS} requests, {IN_FLIGHT} in flight, time to "
            f"first token lognormal (median {MEDIAN * 1e3:.0f} ms, p99 {P99:g} s: sigma "
            f'{SIGMA:.2f}), {LENGTH} output tokens; `race(..., win="first_token")`. Time to '
            "completion of the winner; extra requests and output tokens (the server's, from the "
            f"ledger). {seeds} runs per contender, emulator seeds 11-{10 + seeds}: p50, p99 and "
            "p99.9 from the first; the ratio to unhedged and the extras are the worst run's, "
            "[every run's range]. *p99 vs the model's* divides each run's p99 by the lognormal's "
            f"own p99 ({P99:g} s): the unhedged p99 of {REQUESTS} requests rests on its "
            f"{REQUESTS // 100} slowest and moves from seed to seed, so the ratio to it moves "
            "with it. "
            f"*Pooled* takes the p99 of all {seeds} runs' requests together ({seeds} × "
            f"{REQUESTS}) against the unhedged runs' pooled the same way: the steadier estimate. "
            f"The warm row's `adaptive()` ran {WARM_UP} races first (not timed; its extras are "
            "those of the measured requests), as a module-level one has.",
            "",
        ]
    for backend in backends:
        hedging = results[backend]["hedging"]
        if not hedging:
            continue
        lines += [
            f"| {backend} | p50 | p99 | p99.9 | p99 vs unhedged | pooled p99 vs unhedged "
            f"| p99 vs the model's ({P99:g} s) | extra requests | extra tokens |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in hedging.items():
            lines.append(
                f"| {name} | {row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | "
                f"{row['p999_ms']:.0f} ms | {worst(row, 'p99_ratio', '{:.2f}×')} | "
                f"{row['p99_pooled_ratio']:.2f}× ({row['p99_pooled_ms']:.0f} ms) | "
                f"{max(row['p99_ms_runs']) / (P99 * 1e3):.2f}× "
                f"[{min(row['p99_ms_runs']) / (P99 * 1e3):.2f}×-"
                f"{max(row['p99_ms_runs']) / (P99 * 1e3):.2f}×] | "
                f"{worst(row, 'extra_requests', '{:.1%}')} | "
                f"{worst(row, 'extra_tokens', '{:.1%}')} |"
            )
        lines.append("")
        notes = [f"{name}: {row['learned']}" for name, row in hedging.items() if row["learned"]]
        lines += [f"{backend}, adaptive: " + "; ".join(notes) + ".", ""]
    orphans = sum(
        results[b][k].get("orphans", 0)
        for b in backends
        for k in ("cancel_200ms", "cancel_instant")
    ) + sum(row["orphans"] for b in backends for row in results[b]["hedging"].values())
    lines += [f"Orphans left on the emulator over the whole run: {orphans}.", ""]
    return "\n".join(lines)


def plot_cancel(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Question 1: 100 losers against 1, per contender and backend, with the goal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    labels = [
        f"race, {LOSERS} losers",
        f"before: {BEFORE_SLOTS} cancel slots",
        f"by hand: {LOSERS} raw streams closed + cancelled",
    ]
    keys = ["race_ratio", "before_ratio", "bare_posts_ratio"]
    width = 0.2
    for b, backend in enumerate(results):
        row = results[backend]["cancel_200ms"]
        xs = [i + (b - 0.5) * width for i in range(len(keys))]
        bars = ax.bar(xs, [row[k] for k in keys], width, label=f"{backend}")
        ax.bar_label(bars, fmt="%.2f×", fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(1.5, color="red", linestyle=":", label="goal: 1.5×")
    ax.set_xticks(range(len(keys)), labels)
    ax.set_ylabel("decision → all confirmed, vs 1 loser (×)")
    ax.set_title(
        f"Cancelling {LOSERS} race losers (server-side cancel {CANCEL_DELAY * 1e3:.0f} ms)"
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_hedging(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Question 2: the tail of the time to completion, and p99 against extra requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (tail, trade) = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = {"asyncio": "-", "trio": "--"}
    markers = {"asyncio": "o", "trio": "s"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for backend, data in results.items():
        for color, (name, row) in zip(colors, data["hedging"].items(), strict=False):
            xs = sorted(row["times_ms"])
            ys = [1 - i / len(xs) for i in range(len(xs))]
            tail.plot(xs, ys, styles[backend], color=color, label=f"{name} ({backend})")
            trade.scatter(
                row["extra_requests"] * 100,
                row["p99_ratio"],
                color=color,
                marker=markers[backend],
                label=f"{name} ({backend})",
            )
    tail.set_xscale("log")
    tail.set_yscale("log")
    tail.set_xlabel("time to completion (ms)")
    tail.set_ylabel("fraction of requests slower (1 - CDF)")
    tail.set_title("the tail")
    tail.legend(fontsize=6, loc="lower left")
    trade.axhline(0.4, color="red", linestyle=":", label="goal: p99 ≤ 0.4×")
    trade.set_xlabel("extra requests (%)")
    trade.set_ylabel("p99 vs unhedged (×)")
    trade.set_title("what the p99 costs")
    trade.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Hedging a lognormal model (median {MEDIAN * 1e3:.0f} ms, p99 {P99:g} s)")
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
    parser.add_argument(
        "--cancel-plot", type=Path, default=ROOT / "docs" / "benchmarks" / "race_cancel.png"
    )
    parser.add_argument(
        "--cancel-only",
        action="store_true",
        help="only the cancelling part; prints its table, writes only --out",
    )
    parser.add_argument(
        "--hedge-only",
        action="store_true",
        help="only the hedging part; prints its table, writes only --out",
    )
    parser.add_argument(
        "--seeds", type=int, default=5, help="hedging runs per contender (default 5)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"races per contender in the cancelling part (default {ROUNDS})",
    )
    parser.add_argument(
        "--render", type=Path, help="only print the report of a JSON written by --out"
    )
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return
    if args.serve is not None:
        serve(args.serve)
        return
    seeds = 0 if args.cancel_only else args.seeds
    if args.hedge_only:
        results = {
            backend: anyio.run(run_backend, None, seeds, args.rounds, backend=backend)
            for backend in ("asyncio", "trio")
        }
    else:
        with served(CANCEL_DELAY) as slow, served(0.0) as instant:
            servers = {"cancel_200ms": slow, "cancel_instant": instant}
            results = {
                backend: anyio.run(run_backend, servers, seeds, args.rounds, backend=backend)
                for backend in ("asyncio", "trio")
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(json.dumps(results))
    for backend in summary.values():
        for row in backend["hedging"].values():
            del row["times_ms"]  # the raw samples only feed the plot
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.cancel_only or args.hedge_only:
        print(render(results))
        return
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(results))
    plot_hedging(results, args.plot)
    plot_cancel(results, args.cancel_plot)
    print(render(results))


if __name__ == "__main__":
    main()
