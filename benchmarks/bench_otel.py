"""What tracing costs: events/s through ``guarded_stream``, uninstrumented and instrumented.

Three contenders, interleaved round by round on asyncio and trio, against the emulator
over HTTP (the real path: request, SSE parsing, the guard's book-keeping, cleanup):

1. not instrumented (no observer: one check of an empty tuple per event);
2. ``tether.otel.instrument()`` with OpenTelemetry's no-op providers (what a library user
   pays when the application installed no SDK);
3. ``tether.otel.instrument()`` with the SDK's providers (a ``BatchSpanProcessor`` with
   an exporter that drops the spans, and a metric reader), which build every span and
   aggregate every metric.

Two workloads: one long stream (5,000 deltas: the per-event path), and many short ones
(20 deltas each, so the per-stream work, where the spans are made, weighs most).

On a shared machine those end-to-end figures move by more than the cost being measured,
so the observer's own cost is also timed alone: the progress events of real streams (one
completed, one stopped by ``break`` and cancelled on the server) are recorded, then
replayed through the observer thousands of times; the cost per stream is set against the
time the uninstrumented stream took.

Run: ``python benchmarks/bench_otel.py`` (writes ``docs/benchmarks/otel.md`` and
``benchmarks/results/otel.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tether
import tether.otel
from tether.testing import EmulatedModel, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
LONG = 5000
SHORT = 20
SHORT_STREAMS = 50
MODELS = {
    "long": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=LONG),
    "short": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=SHORT),
}
CONTENDERS = ("not instrumented", "no-op providers", "SDK providers")


class Dropping(SpanExporter):
    """An exporter that counts the spans and sends them nowhere."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def read_all(client: openai.AsyncOpenAI, model: str) -> int:
    count = 0
    async with tether.guarded_stream(client, model=model, input="hi") as stream:
        async for _ in stream:
            count += 1
    assert stream.outcome.reason == "completed", stream.outcome
    return count


async def timed(client: openai.AsyncOpenAI, model: str, streams: int) -> tuple[int, float]:
    """Read *streams* streams one after the other: (events read, seconds)."""
    started = anyio.current_time()
    count = 0
    for _ in range(streams):
        count += await read_all(client, model)
    return count, anyio.current_time() - started


async def lifecycles(client: openai.AsyncOpenAI) -> dict[str, list[Any]]:
    """The progress events of a completed stream and of one cancelled after a ``break``."""
    completed: list[Any] = []
    with tether.observe.observing(completed.append):
        await read_all(client, "short")
    cancelled: list[Any] = []
    with tether.observe.observing(cancelled.append):
        async with tether.guarded_stream(client, model="long", input="hi") as stream:
            async for event in stream:
                if event.type.endswith(".delta"):
                    break
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.stopped
    return {"completed": completed, "break + server cancel": cancelled}


def replay_us(events: list[Any], pair: tuple[Any, Any], repeats: int = 3000) -> float:
    """Microseconds the observer takes over one stream's events (best of 5 batches)."""
    observer = tether.otel.OtelObserver(tracer_provider=pair[0], meter_provider=pair[1])
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            for event in events:
                observer(event)
        best = min(best, (time.perf_counter() - started) / repeats)
    assert observer.open_spans == 0
    return best * 1e6


async def run_backend(rounds: int) -> dict[str, Any]:
    exporter = Dropping()
    sdk_tracer = TracerProvider()
    sdk_tracer.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    sdk_meter = MeterProvider(metric_readers=[reader])
    providers: dict[str, tuple[Any, Any] | None] = {
        "not instrumented": None,
        "no-op providers": (trace.NoOpTracerProvider(), metrics.NoOpMeterProvider()),
        "SDK providers": (sdk_tracer, sdk_meter),
    }
    long: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    short: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    per_stream: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    async with ResponsesEmulator(models=MODELS, seed=3) as emu:
        async with emu.async_client() as client:
            await timed(client, "short", 5)  # warm the connection and the caches
            recorded = await lifecycles(client)
            for round_ in range(rounds):
                # Interleaved, in a rotating order, so drift hits every contender alike.
                order = CONTENDERS[round_ % 3 :] + CONTENDERS[: round_ % 3]
                for name in order:
                    pair = providers[name]
                    if pair is not None:
                        tether.otel.instrument(tracer_provider=pair[0], meter_provider=pair[1])
                    try:
                        events, seconds = await timed(client, "long", 1)
                        long[name].append(events / seconds)
                        events, seconds = await timed(client, "short", SHORT_STREAMS)
                        short[name].append(events / seconds)
                        per_stream[name].append(seconds / SHORT_STREAMS)
                    finally:
                        tether.otel.uninstrument()
    replay = {
        lifecycle: {name: replay_us(events, pair) for name, pair in providers.items() if pair}
        for lifecycle, events in recorded.items()
    }
    sdk_tracer.shutdown()  # flushes the batch processor
    data = reader.get_metrics_data()
    metric_names = sorted(
        {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
        if data is not None
        else set()
    )
    base_long = statistics.median(long["not instrumented"])
    base_short = statistics.median(short["not instrumented"])
    return {
        "long_events_per_s": {k: statistics.median(v) for k, v in long.items()},
        "short_events_per_s": {k: statistics.median(v) for k, v in short.items()},
        "long_ratio": {k: statistics.median(v) / base_long for k, v in long.items()},
        "short_ratio": {k: statistics.median(v) / base_short for k, v in short.items()},
        "short_us_per_stream": {k: statistics.median(v) * 1e6 for k, v in per_stream.items()},
        "short_us_per_stream_added": {
            k: (statistics.median(v) - statistics.median(per_stream["not instrumented"])) * 1e6
            for k, v in per_stream.items()
        },
        "observer_us_per_stream": replay,
        "long_stream_ms": LONG / base_long * 1e3,
        "sdk_spans_exported": exporter.spans,
        "sdk_metrics": metric_names,
    }


def render(results: dict[str, dict[str, Any]], rounds: int) -> str:
    backends = list(results)
    lines = [
        f"Measured by `python benchmarks/bench_otel.py` ({rounds} interleaved rounds per "
        f"backend, medians; Python {sys.version.split()[0]}, openai {openai.__version__}, "
        f"opentelemetry {_otel_version()}). Events/s through `guarded_stream` against the "
        "emulator over HTTP; the ratio is against the uninstrumented run of the same round set.",
        "",
        f"| one stream of {LONG:,} deltas | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in CONTENDERS:
        cells = [
            f"{results[b]['long_events_per_s'][name]:,.0f} events/s "
            f"({results[b]['long_ratio'][name]:.3f}×)"
            for b in backends
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| {SHORT_STREAMS} streams of {SHORT} deltas | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    for name in CONTENDERS:
        cells = [
            f"{results[b]['short_events_per_s'][name]:,.0f} events/s "
            f"({results[b]['short_ratio'][name]:.3f}×"
            + (
                ""
                if name == CONTENDERS[0]
                else f", {results[b]['short_us_per_stream_added'][name]:+.0f} µs/stream"
            )
            + ")"
            for b in backends
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| the observer alone, per stream (replayed events) | " + " | ".join(backends) + " |",
        "|---|" + "---|" * len(backends),
    ]
    base = results[backends[0]]["observer_us_per_stream"]
    for lifecycle in base:
        for name in base[lifecycle]:
            cells = []
            for b in backends:
                us = results[b]["observer_us_per_stream"][lifecycle][name]
                stream_us = results[b]["short_us_per_stream"]["not instrumented"]
                long_us = results[b]["long_stream_ms"] * 1e3
                cells.append(
                    f"{us:.1f} µs ({us / stream_us:.2%} of a {SHORT}-delta stream, "
                    f"{us / long_us:.3%} of a {LONG:,}-delta one)"
                )
            lines.append(f"| {lifecycle}, {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Spans the SDK providers exported (the streams' and the replays'): "
        + ", ".join(f"{b}: {results[b]['sdk_spans_exported']:,}" for b in backends)
        + ". Metrics it recorded: "
        + ", ".join(f"`{name}`" for name in results[backends[0]]["sdk_metrics"])
        + ".",
        "",
    ]
    return "\n".join(lines)


def _otel_version() -> str:
    from importlib import metadata

    return metadata.version("opentelemetry-api")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "otel.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "otel.md")
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
