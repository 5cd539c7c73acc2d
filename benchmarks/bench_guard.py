"""Side by side, in one run, on asyncio and trio: what stopping a stream costs and wastes.

1. Tokens generated after the client stopped wanting them, on a 50 ms/token model, for
   (a) the raw SDK with ``break`` (the bug), (b) by hand: close then ``responses.cancel``
   (openai-python PR #2916's pattern) on ``break``, and under a shield after
   ``move_on_after`` and a deadline (the hand-written best per trigger), (c) tether on
   ``break``, an explicit ``await stream.cancel()``, ``move_on_after`` and a scope deadline.
2. Cancel latency, trigger to the end of the stop, relative to a bare cancel POST (warm, and
   on a new connection: a closed stream's connection is gone). The by-hand loops end with
   the cancel's answer; tether's stop reads a ``cancelled`` answer back by default (one
   ``retrieve``: the API's cancel is best effort), so its rows include that GET, and one
   row runs it with ``confirm=False``: the same work as by hand.
3. Events per client CPU-second through ``guarded_stream`` relative to raw SDK iteration,
   against an emulator in another process (so the client's CPU time is the client's alone):
   a raw and a guarded stream read in alternation, event by event, each read's CPU time
   added to its side; the median of the per-round ratios. A control in every round puts a
   second raw stream in the guarded one's place: what the method gives for no difference.
4. Client CPU per short (5-token) response, open to exit, through ``guarded_stream`` against
   the same block by hand (create, read to the end, close), on the same emulator process:
   what a chat turn pays for the guard, whose fixed costs a long stream hides.

Run: ``python benchmarks/bench_guard.py`` (writes ``docs/benchmarks/guard.md``,
``docs/benchmarks/guard.png`` and
``benchmarks/results/guard.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import openai

import tether
from tether.testing import EmulatedModel, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
STOP_AFTER = 5  # deltas read before the client stops wanting more
MODELS = {
    "slow-50ms": EmulatedModel(ttft=0.0, tokens_per_s=20.0, length=60),
    "bulk": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=5000),
    "short": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=5),
}


async def _read(events: Any, n: int) -> int:
    seen = 0
    async for event in events:
        if event.type == "response.output_text.delta":
            seen += 1
            if seen >= n:
                break
    return seen


async def _wasted(emu: ResponsesEmulator, response_id: str, read: int) -> int:
    """Tokens the server generated beyond those read, once it stopped generating."""
    await emu.wait_for(lambda ledger: not ledger[response_id].generating, timeout=30)
    return emu.ledger[response_id].tokens_generated - read


async def _read_raw(client: openai.AsyncOpenAI) -> tuple[Any, str, int]:
    """The raw SDK stream, read until the client stops wanting more: (stream, id, deltas read)."""
    stream = await client.responses.create(
        model="slow-50ms", input="hi", stream=True, background=True
    )
    response_id = ""
    read = 0
    async for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            read += 1
            if read >= STOP_AFTER:
                break
    return stream, response_id, read


async def timer_lateness() -> float:
    """How late the event loop wakes a task for a deadline: what a deadline trigger pays
    before anything of the stop runs (the scope deadline rows include it; ``move_on_after``
    here sets a deadline already past, so it does not)."""
    due = anyio.current_time() + 0.0123
    await anyio.sleep_until(due)
    return anyio.current_time() - due


async def raw_break(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    stream, response_id, read = await _read_raw(client)
    await stream.close()  # closing the socket does not stop a background response
    return await _wasted(emu, response_id, read), float("nan")


async def manual_cancel(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    stream, response_id, read = await _read_raw(client)
    trigger = anyio.current_time()
    await stream.close()
    await client.responses.cancel(response_id)
    latency = anyio.current_time() - trigger
    return await _wasted(emu, response_id, read), latency


async def _manual_under(
    emu: ResponsesEmulator, client: openai.AsyncOpenAI, deadline: float | None
) -> tuple[int, float]:
    """By hand, the best the raw SDK allows: a cancel scope around the read, then, under a
    shield, close and ``responses.cancel``. With *deadline* None the scope's deadline is set
    to now after STOP_AFTER tokens (as ``tether_move_on_after`` does), else it is *deadline*
    seconds from the start (as ``tether_deadline``)."""
    stream = await client.responses.create(
        model="slow-50ms", input="hi", stream=True, background=True
    )
    response_id = ""
    read = 0
    trigger = math.nan
    with anyio.move_on_after(3600 if deadline is None else deadline) as cancel_scope:
        if deadline is not None:
            trigger = cancel_scope.deadline
        try:
            async for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                elif event.type == "response.output_text.delta":
                    read += 1
                    if deadline is None and read == STOP_AFTER:
                        trigger = cancel_scope.deadline = anyio.current_time()
        finally:
            with anyio.CancelScope(shield=True):
                await stream.close()
                await client.responses.cancel(response_id)
                latency = anyio.current_time() - trigger
    return await _wasted(emu, response_id, read), latency


async def manual_move_on_after(
    emu: ResponsesEmulator, client: openai.AsyncOpenAI
) -> tuple[int, float]:
    return await _manual_under(emu, client, None)


async def manual_deadline(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    return await _manual_under(emu, client, (STOP_AFTER + 0.5) * 0.05)


async def tether_break(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    async with tether.guarded_stream(client, model="slow-50ms", input="hi") as stream:
        read = await _read(stream, STOP_AFTER)
        trigger = anyio.current_time()
    latency = stream.outcome.ended_at - trigger
    return await _wasted(emu, stream.response_id or "", read), latency


async def tether_break_unconfirmed(
    emu: ResponsesEmulator, client: openai.AsyncOpenAI
) -> tuple[int, float]:
    """``break`` in a scope that trusts the cancel's answer: the same work as by hand."""
    async with tether.open_scope(client, confirm=False) as scope:
        async with tether.guarded_stream(scope, model="slow-50ms", input="hi") as stream:
            read = await _read(stream, STOP_AFTER)
            trigger = anyio.current_time()
    latency = stream.outcome.ended_at - trigger
    return await _wasted(emu, stream.response_id or "", read), latency


async def tether_explicit(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    async with tether.guarded_stream(client, model="slow-50ms", input="hi") as stream:
        read = await _read(stream, STOP_AFTER)
        trigger = anyio.current_time()
        await stream.cancel()
        latency = anyio.current_time() - trigger
    return await _wasted(emu, stream.response_id or "", read), latency


async def tether_move_on_after(
    emu: ResponsesEmulator, client: openai.AsyncOpenAI
) -> tuple[int, float]:
    read = 0
    with anyio.move_on_after(3600) as cancel_scope:
        async with tether.guarded_stream(client, model="slow-50ms", input="hi") as stream:
            read = await _read(stream, STOP_AFTER)
            trigger = anyio.current_time()
            cancel_scope.deadline = trigger
            await _read(stream, 10_000)
    latency = stream.outcome.ended_at - trigger
    return await _wasted(emu, stream.response_id or "", read), latency


async def tether_deadline(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    # The scope's deadline lands after about STOP_AFTER tokens of a 50 ms/token model.
    read = 0
    try:
        async with tether.open_scope(client, deadline=(STOP_AFTER + 0.5) * 0.05) as scope:
            async with tether.guarded_stream(scope, model="slow-50ms", input="hi") as stream:
                async for event in stream:
                    if event.type == "response.output_text.delta":
                        read += 1
    except TimeoutError:
        pass
    trigger = scope.deadline
    latency = stream.outcome.ended_at - trigger
    return await _wasted(emu, stream.response_id or "", read), latency


async def bare_cancel_post(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> float:
    """The floor: one cancel POST on a running response, nothing else."""
    created = await client.responses.create(model="slow-50ms", input="hi", background=True)
    await emu.wait_for(lambda ledger: ledger[created.id].tokens_generated >= 1)
    started = anyio.current_time()
    await client.responses.cancel(created.id)
    return anyio.current_time() - started


async def cold_cancel_post(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> float:
    """The honest floor: one cancel POST on a new connection. Closing an unfinished stream
    drops its connection, so whoever cancels next (tether or by hand) opens a new one."""
    created = await client.responses.create(model="slow-50ms", input="hi", background=True)
    await emu.wait_for(lambda ledger: ledger[created.id].tokens_generated >= 1)
    async with emu.async_client() as fresh:
        started = anyio.current_time()
        await fresh.responses.cancel(created.id)
        return anyio.current_time() - started


def serve() -> None:
    """The emulator's process, for the throughput rounds: print its URL, serve until stdin closes."""
    with ResponsesEmulator(models=MODELS, seed=7) as emu:
        print(emu.base_url, flush=True)
        sys.stdin.read()


async def _raw_events(client: openai.AsyncOpenAI) -> tuple[Any, Any]:
    """A raw SDK stream of the bulk model, and what `async for event in` it reads."""
    raw = await client.responses.create(model="bulk", input="hi", stream=True, background=True)
    return raw, raw.__aiter__()


async def paired_round(
    client: openai.AsyncOpenAI, guarded_first: bool = False, *, control: bool = False
) -> tuple[float, float, int]:
    """One raw SDK stream and one guarded stream of the same model, read in alternation,
    one event each in turn; each read's CPU time (this thread's) added to its own side.

    Both see the same process state, the same server and the same moment, so the ratio is
    not at the mercy of what the SDK's per-event cost does from one run to the next (it
    varies by a third between runs of the same contender). Which side reads first in each
    pair alternates from round to round (*guarded_first*): a read that waits runs the loop's
    work for the other stream's socket too. With *control*, the second side is another raw
    stream: the method's own bias, which the guarded ratio is read against. (raw CPU s,
    second side's CPU s, events)
    """
    clock = time.thread_time
    cpu = [0.0, 0.0]  # raw, second (guarded, or the control's raw)
    events = 0
    raw, raw_events = await _raw_events(client)

    async def alternate(second: Any) -> None:
        nonlocal events
        sides = [(1, second), (0, raw_events)]
        if not guarded_first:
            sides.reverse()
        ended = False
        while not ended:
            spent = [0.0, 0.0]
            for side, reader in sides:
                started = clock()
                try:
                    await reader.__anext__()
                except StopAsyncIteration:
                    ended = True
                    break
                spent[side] = clock() - started
            if not ended:
                cpu[0] += spent[0]
                cpu[1] += spent[1]
                events += 1

    if control:
        other, other_events = await _raw_events(client)
        await alternate(other_events)
        await other_events.aclose()
        await other.close()
    else:
        async with tether.guarded_stream(client, model="bulk", input="hi") as stream:
            await alternate(stream.__aiter__())
    await raw_events.aclose()  # the SDK's generator, finished here rather than by the GC
    await raw.close()
    return cpu[0], cpu[1], events


SHORT_BLOCKS = 40
"""Short blocks per side in each per-block round."""


async def _short_raw(client: openai.AsyncOpenAI) -> None:
    """A short response by hand: create, read to the end, close (nothing to cancel)."""
    stream = await client.responses.create(model="short", input="hi", stream=True, background=True)
    async with stream:
        async for _ in stream:
            pass


async def _short_guarded(client: openai.AsyncOpenAI) -> None:
    async with tether.guarded_stream(client, model="short", input="hi") as stream:
        async for _ in stream:
            pass


async def per_block_round(client: openai.AsyncOpenAI, guarded_first: bool) -> tuple[float, float]:
    """CPU seconds (this thread's) of SHORT_BLOCKS short blocks each, raw and guarded, one
    side after the other (which goes first alternates from round to round)."""
    clock = time.thread_time
    cpu: dict[str, float] = {}
    sides = [("guarded", _short_guarded), ("raw", _short_raw)]
    if not guarded_first:
        sides.reverse()
    for name, block in sides:
        started = clock()
        for _ in range(SHORT_BLOCKS):
            await block(client)
        cpu[name] = clock() - started
    return cpu["raw"], cpu["guarded"]


async def throughput(base_url: str, rounds: int) -> dict[str, Any]:
    """Events per client CPU-second, raw and guarded, paired; the per-round ratios."""
    raw: list[float] = []
    guarded: list[float] = []
    ratios: list[float] = []
    controls: list[float] = []
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator") as client:
        await paired_round(client)  # warm: imports, schemas, the pool
        for round_ in range(rounds):
            raw_cpu, guarded_cpu, events = await paired_round(client, round_ % 2 == 1)
            raw.append(events / raw_cpu)
            guarded.append(events / guarded_cpu)
            ratios.append(raw_cpu / guarded_cpu)
            raw_cpu, other_cpu, _ = await paired_round(client, round_ % 2 == 1, control=True)
            controls.append(raw_cpu / other_cpu)
        raw_ms: list[float] = []
        guarded_ms: list[float] = []
        block_ratios: list[float] = []
        await per_block_round(client, False)  # warm
        for round_ in range(rounds):
            raw_cpu, guarded_cpu = await per_block_round(client, round_ % 2 == 1)
            raw_ms.append(raw_cpu / SHORT_BLOCKS * 1000)
            guarded_ms.append(guarded_cpu / SHORT_BLOCKS * 1000)
            block_ratios.append(guarded_cpu / raw_cpu)
    return {
        "raw_block_ms": statistics.median(raw_ms),
        "guarded_block_ms": statistics.median(guarded_ms),
        "block_ratio": statistics.median(block_ratios),
        "block_ratio_iqr": _iqr(block_ratios),
        "raw_events_per_cpu_s": statistics.median(raw),
        "guarded_events_per_cpu_s": statistics.median(guarded),
        "events_ratio": statistics.median(ratios),
        "events_ratio_iqr": _iqr(ratios),
        "control_ratio": statistics.median(controls),
        "control_ratio_iqr": _iqr(controls),
        "throughput_rounds": rounds,
    }


def _iqr(values: list[float]) -> list[float]:
    """[first, third] quartile, as the rounds fell (their lower and upper quarter cut off)."""
    ordered = sorted(values)
    quarter = len(ordered) // 4
    return [ordered[quarter], ordered[-1 - quarter]]


WASTE = {
    "raw SDK, break (the bug)": raw_break,
    "by hand: break, close + cancel (PR #2916)": manual_cancel,
    "by hand: move_on_after, shielded close + cancel": manual_move_on_after,
    "by hand: deadline, shielded close + cancel": manual_deadline,
    "tether, break, confirm=False (close + cancel, as by hand)": tether_break_unconfirmed,
    "tether, break (+ the read-back that confirms it)": tether_break,
    "tether, await stream.cancel() (+ read-back)": tether_explicit,
    "tether, move_on_after (+ read-back)": tether_move_on_after,
    "tether, scope deadline (+ read-back)": tether_deadline,
}


async def run_backend(rounds: int) -> dict[str, Any]:
    async with ResponsesEmulator(models=MODELS, seed=7) as emu:
        async with emu.async_client() as client:
            waste: dict[str, list[int]] = {name: [] for name in WASTE}
            latency: dict[str, list[float]] = {name: [] for name in WASTE}
            bare: list[float] = []
            cold: list[float] = []
            late: list[float] = []
            for _ in range(rounds):  # interleaved, so drift hits every contender alike
                results: dict[str, tuple[int, float]] = {}
                for name, fn in WASTE.items():
                    results[name] = await fn(emu, client)
                for name, (wasted, lat) in results.items():
                    waste[name].append(wasted)
                    latency[name].append(lat)
                bare.append(await bare_cancel_post(emu, client))
                cold.append(await cold_cancel_post(emu, client))
                late.append(await timer_lateness())
            orphans = len(emu.ledger.orphans())
    bare_median = statistics.median(bare)
    cold_median = statistics.median(cold)
    return {
        "waste_median_tokens": {k: statistics.median(v) for k, v in waste.items()},
        "waste_max_tokens": {k: max(v) for k, v in waste.items()},
        "cancel_latency_ms": {
            k: statistics.median(v) * 1000 for k, v in latency.items() if v[0] == v[0]
        },
        "bare_cancel_post_ms": bare_median * 1000,
        "cold_cancel_post_ms": cold_median * 1000,
        "timer_lateness_ms": statistics.median(late) * 1000,
        "latency_ratio_vs_bare_post": {
            k: statistics.median(v) / bare_median for k, v in latency.items() if v[0] == v[0]
        },
        "latency_ratio_vs_cold_post": {
            k: statistics.median(v) / cold_median for k, v in latency.items() if v[0] == v[0]
        },
        "orphans_left": orphans,
    }


def render_throughput(results: dict[str, dict[str, Any]]) -> list[str]:
    """Parts 3 and 4's tables (all that ``--throughput-only`` prints)."""
    backends = list(results)
    return [
        "**Throughput**, per client CPU-second: a raw SDK stream and a guarded one of the same "
        "5,000-event model, read in alternation, one event each in turn (which side reads first "
        "alternates from round to round), each read's CPU time counted to its side (the "
        "emulator in another process); "
        f"{results[backends[0]]['throughput_rounds']} rounds, the ratio is the median of the "
        "per-round ratios, with their interquartile range.",
        "",
        "| throughput | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
        "| raw SDK iteration | "
        + " | ".join(f"{results[b]['raw_events_per_cpu_s']:,.0f} events/CPU-s" for b in backends)
        + " |",
        "| through `guarded_stream` | "
        + " | ".join(
            f"{results[b]['guarded_events_per_cpu_s']:,.0f} events/CPU-s "
            f"({results[b]['events_ratio']:.3f}×, "
            f"IQR {results[b]['events_ratio_iqr'][0]:.3f}–{results[b]['events_ratio_iqr'][1]:.3f})"
            for b in backends
        )
        + " |",
        "| control: a second raw SDK stream in the guarded one's place (the method's own bias) | "
        + " | ".join(
            f"{results[b]['control_ratio']:.3f}× (IQR {results[b]['control_ratio_iqr'][0]:.3f}–"
            f"{results[b]['control_ratio_iqr'][1]:.3f})"
            for b in backends
        )
        + " |",
        "",
        f"**Per block**, client CPU per short (5-token) background response, open to exit: "
        f"{SHORT_BLOCKS} blocks by hand (create, read to the end, close: nothing to cancel) "
        f"and {SHORT_BLOCKS} through `guarded_stream`, one side after the other (which goes "
        "first alternates from round to round); the ratio is the median of the per-round "
        "ratios, with their interquartile range.",
        "",
        "| per block | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
        "| by hand | "
        + " | ".join(f"{results[b]['raw_block_ms']:.2f} ms" for b in backends)
        + " |",
        "| through `guarded_stream` | "
        + " | ".join(
            f"{results[b]['guarded_block_ms']:.2f} ms ({results[b]['block_ratio']:.3f}×, "
            f"IQR {results[b]['block_ratio_iqr'][0]:.3f}–{results[b]['block_ratio_iqr'][1]:.3f})"
            for b in backends
        )
        + " |",
        "",
    ]


def render(results: dict[str, dict[str, Any]], rounds: int) -> str:
    backends = list(results)
    lines = [
        f"Measured by `python benchmarks/bench_guard.py` ({rounds} interleaved rounds per backend, "
        f"medians; Python {sys.version.split()[0]}, openai {openai.__version__}). "
        f"The client stops after {STOP_AFTER} tokens of a 60-token, 50 ms/token background response.",
        "",
        "| tokens generated after the client stopped | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in WASTE:
        cells = [f"{results[b]['waste_median_tokens'][name]:g}" for b in backends]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| cancel latency, trigger to confirmed | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
        "| cancel POST on a warm connection | "
        + " | ".join(f"{results[b]['bare_cancel_post_ms']:.2f} ms" for b in backends)
        + " |",
        "| cancel POST on a new connection (the floor after a close) | "
        + " | ".join(f"{results[b]['cold_cancel_post_ms']:.2f} ms" for b in backends)
        + " |",
        "| a deadline's own lateness (the loop waking for a timer; in every deadline row) | "
        + " | ".join(f"{results[b]['timer_lateness_ms']:.2f} ms" for b in backends)
        + " |",
    ]
    for name in list(WASTE)[1:]:
        cells = [
            f"{results[b]['cancel_latency_ms'][name]:.2f} ms "
            f"({results[b]['latency_ratio_vs_cold_post'][name]:.2f}× new, "
            f"{results[b]['latency_ratio_vs_bare_post'][name]:.2f}× warm)"
            for b in backends
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *render_throughput(results)]
    lines += [
        "Orphans left on the emulator at the end of the run (the raw SDK's responses had "
        "finished by then): " + ", ".join(f"{b}: {results[b]['orphans_left']}" for b in backends),
        "",
    ]
    return "\n".join(lines)


def _short(name: str) -> str:
    """A contender's name as a two-line tick label: who, and on what trigger."""
    who, _, what = name.partition(": " if name.startswith("by hand") else ", ")
    what = what.replace("await stream.", "").split(" (")[0]
    if who != "tether":
        what = what.split(",")[0]
    elif "confirm=False" in what:
        what = what.replace(", confirm=False", ", unconfirmed")
    else:
        what += " + read-back"
    return f"{who}\n{what}"


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Cancel latency per trigger against a new-connection POST, and throughput, per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(results)
    triggers = list(WASTE)[1:]
    fig, (latency, speed) = plt.subplots(
        1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [3.4, 1]}
    )
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        xs = [t + (i - (len(backends) - 1) / 2) * width for t in range(len(triggers))]
        ratios = [results[backend]["latency_ratio_vs_cold_post"][name] for name in triggers]
        bars = latency.bar(xs, ratios, width, label=backend)
        latency.bar_label(bars, fmt="%.2f×", fontsize=8)
        iqr = results[backend]["events_ratio_iqr"]
        ratio = results[backend]["events_ratio"]
        speed.bar(
            [i],
            [ratio],
            0.6,
            yerr=[[ratio - iqr[0]], [iqr[1] - ratio]],
            capsize=4,
            label=backend,
        )
        speed.text(i, iqr[1] + 0.005, f"{ratio:.3f}×", ha="center", fontsize=8)
    latency.axhline(1.0, color="grey", linewidth=0.8)
    latency.axhline(1.2, color="red", linestyle=":", label="goal: 1.2×")
    latency.set_xticks(range(len(triggers)), [_short(name) for name in triggers])
    latency.set_ylim(0, 1.8)
    latency.set_ylabel("trigger → confirmed, vs a new-connection POST (×)")
    latency.set_title("Cancel latency")
    latency.legend(loc="upper center", ncol=3)
    speed.axhline(0.99, color="red", linestyle=":", label="goal: 0.99×")
    speed.set_xticks(range(len(backends)), backends)
    speed.set_ylim(0.8, 1.1)
    speed.set_ylabel("events per client CPU-s, vs the raw SDK (×)")
    speed.set_title("Throughput (median, IQR)")
    speed.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--throughput-rounds", type=int, default=20)
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only parts 3 and 4 (events per CPU-second, CPU per block); prints them, writes nothing",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "guard.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "guard.png")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    results: dict[str, dict[str, Any]] = {
        backend: {}
        if args.throughput_only
        else anyio.run(run_backend, args.rounds, backend=backend)
        for backend in ("asyncio", "trio")
    }
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        for backend in results:
            results[backend] |= anyio.run(
                throughput, base_url, args.throughput_rounds, backend=backend
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait()
    if args.throughput_only:
        print("\n".join(render_throughput(results)))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(results, args.rounds))
    plot(results, args.plot)
    print(render(results, args.rounds))


if __name__ == "__main__":
    main()
