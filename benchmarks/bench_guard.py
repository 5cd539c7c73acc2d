"""Side by side, in one run, on asyncio and trio: what stopping a stream costs and wastes.

1. Tokens generated after the client stopped wanting them, on a 50 ms/token model, for
   (a) the raw SDK with ``break`` (the bug), (b) close then a manual ``responses.cancel``
   (openai-python PR #2916's pattern), (c) tether on ``break``, ``move_on_after`` and a
   scope deadline.
2. Cancel latency, trigger to server-confirmed, relative to a bare cancel POST.
3. Events/s through ``guarded_stream`` relative to raw SDK iteration.

Run: ``python benchmarks/bench_guard.py`` (writes ``docs/benchmarks/guard.md`` and
``benchmarks/results/guard.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import anyio
import openai

import tether
from tether.testing import Model, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
STOP_AFTER = 5  # deltas read before the client stops wanting more
MODELS = {
    "slow-50ms": Model(ttft=0.0, tokens_per_s=20.0, length=60),
    "bulk": Model(ttft=0.0, tokens_per_s=1e9, length=5000),
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


async def tether_break(emu: ResponsesEmulator, client: openai.AsyncOpenAI) -> tuple[int, float]:
    async with tether.guarded_stream(client, model="slow-50ms", input="hi") as stream:
        read = await _read(stream, STOP_AFTER)
        trigger = anyio.current_time()
    latency = stream.outcome.ended_at - trigger
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


async def raw_events_per_s(client: openai.AsyncOpenAI) -> float:
    stream = await client.responses.create(model="bulk", input="hi", stream=True, background=True)
    started = anyio.current_time()
    count = 0
    async for _ in stream:
        count += 1
    return count / (anyio.current_time() - started)


async def guarded_events_per_s(client: openai.AsyncOpenAI) -> float:
    count = 0
    async with tether.guarded_stream(client, model="bulk", input="hi") as stream:
        started = anyio.current_time()
        async for _ in stream:
            count += 1
    return count / (anyio.current_time() - started)


WASTE = {
    "raw SDK, break (the bug)": raw_break,
    "close + manual cancel (PR #2916)": manual_cancel,
    "tether, break": tether_break,
    "tether, move_on_after": tether_move_on_after,
    "tether, scope deadline": tether_deadline,
}


async def run_backend(rounds: int) -> dict[str, Any]:
    async with ResponsesEmulator(models=MODELS, seed=7) as emu:
        async with emu.async_client() as client:
            waste: dict[str, list[int]] = {name: [] for name in WASTE}
            latency: dict[str, list[float]] = {name: [] for name in WASTE}
            bare: list[float] = []
            cold: list[float] = []
            raw_eps: list[float] = []
            guarded_eps: list[float] = []
            for _ in range(rounds):  # interleaved, so drift hits every contender alike
                results: dict[str, tuple[int, float]] = {}
                for name, fn in WASTE.items():
                    results[name] = await fn(emu, client)
                for name, (wasted, lat) in results.items():
                    waste[name].append(wasted)
                    latency[name].append(lat)
                bare.append(await bare_cancel_post(emu, client))
                cold.append(await cold_cancel_post(emu, client))
                raw_eps.append(await raw_events_per_s(client))
                guarded_eps.append(await guarded_events_per_s(client))
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
        "latency_ratio_vs_bare_post": {
            k: statistics.median(v) / bare_median for k, v in latency.items() if v[0] == v[0]
        },
        "latency_ratio_vs_cold_post": {
            k: statistics.median(v) / cold_median for k, v in latency.items() if v[0] == v[0]
        },
        "raw_events_per_s": statistics.median(raw_eps),
        "guarded_events_per_s": statistics.median(guarded_eps),
        "events_ratio": statistics.median(guarded_eps) / statistics.median(raw_eps),
        "orphans_left": orphans,
    }


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
    ]
    for name in list(WASTE)[1:]:
        cells = [
            f"{results[b]['cancel_latency_ms'][name]:.2f} ms "
            f"({results[b]['latency_ratio_vs_cold_post'][name]:.2f}× new, "
            f"{results[b]['latency_ratio_vs_bare_post'][name]:.2f}× warm)"
            for b in backends
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| throughput | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
        "| raw SDK iteration | "
        + " | ".join(f"{results[b]['raw_events_per_s']:,.0f} events/s" for b in backends)
        + " |",
        "| through `guarded_stream` | "
        + " | ".join(
            f"{results[b]['guarded_events_per_s']:,.0f} events/s ({results[b]['events_ratio']:.3f}×)"
            for b in backends
        )
        + " |",
        "",
        "Orphans left on the emulator at the end of the run (the raw SDK's responses had "
        "finished by then): " + ", ".join(f"{b}: {results[b]['orphans_left']}" for b in backends),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "guard.md")
    args = parser.parse_args()
    results = {
        backend: anyio.run(run_backend, args.rounds, backend=backend)
        for backend in ("asyncio", "trio")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(results, args.rounds))
    print(render(results, args.rounds))


if __name__ == "__main__":
    main()
