"""The trace picture of ``docs/observability.md``: a real run, its spans drawn as a timeline.

An agent on the emulator makes one tool call; the tool runs a hedged race of two models
(the first stays silent, the hedge wins, the loser is cancelled on the server); the agent
then answers. The spans go through the SDK's ``ConsoleSpanExporter`` (one JSON line per
span, kept in ``docs/otel_trace.jsonl``), and that output is drawn as a Gantt chart.

Run: ``python benchmarks/otel_trace.py`` (writes ``docs/otel_trace.png`` and
``docs/otel_trace.jsonl``).
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import tether
import tether.otel
from tether.testing import EmulatedModel, FunctionCall, ResponsesEmulator, Turn

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "planner": EmulatedModel(
        ttft=0.01,
        tokens_per_s=2000.0,
        script=[
            Turn(calls=[FunctionCall(name="research", arguments={"topic": "tides"})]),
            Turn(text="Here is what I found:", echo_outputs=True),
        ],
    ),
    "sluggish": EmulatedModel(ttft=5.0, tokens_per_s=100.0, length=40),
    "quick": EmulatedModel(ttft=0.02, tokens_per_s=300.0, length=15),
}
COLOURS = {
    "invoke_agent": "#6c757d",
    "tether.turn": "#adb5bd",
    "execute_tool": "#2b8a3e",
    "tether.race": "#e67700",
    "tether.attempt": "#ffa94d",
    "chat": "#1c7ed6",
    "tether.cancel": "#c92a2a",
}


async def scenario(emu: ResponsesEmulator, provider: TracerProvider) -> None:
    async with emu.async_client() as client:
        async with tether.guarded_stream(client, model="quick", input="warm up") as stream:
            await stream.get_final_response()  # the SDK's first-use costs, before the trace
        tether.otel.instrument(tracer_provider=provider)

        async def research(topic: str) -> str:
            """Ask two models; the first one to answer wins."""
            result = await tether.race(
                client,
                [
                    {"model": "sluggish", "input": topic},
                    {"model": "quick", "input": topic},
                ],
                stagger=0.08,
            )
            return result.winner.response.output_text if result.winner.response else ""

        result = await tether.run_agent(
            client, model="planner", input="What are tides?", tools=[research]
        )
        assert result.reason == "completed", result


def record() -> list[dict[str, Any]]:
    out = io.StringIO()
    provider = TracerProvider()
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with ResponsesEmulator(models=MODELS, seed=5) as emu:
            anyio.run(scenario, emu, provider)
    finally:
        tether.otel.uninstrument()
        provider.shutdown()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _ordered(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first, children by start time: (depth, span)."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    ids = {span["context"]["span_id"] for span in spans}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_time"]):
            ordered.append((depth, span))
            walk(span["context"]["span_id"], depth + 1)

    walk(None, 0)
    return ordered


def _detail(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    if span["name"] == "tether.cancel":
        return f"{attributes['tether.end_reason']} → {attributes.get('tether.cancel.status')}"
    keys = ("tether.attempt.trigger", "tether.attempt.state", "tether.end_reason")
    return ", ".join(str(attributes[key]) for key in keys if key in attributes)


def draw(spans: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _ordered(spans)
    origin = min(_time(span["start_time"]) for _, span in rows)
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.2))
    for y, (_, span) in enumerate(rows):
        start = (_time(span["start_time"]) - origin) * 1e3
        width = max((_time(span["end_time"]) - origin) * 1e3 - start, 0.3)
        prefix = span["name"].split(" ")[0]
        colour = COLOURS.get(prefix, "#868e96")
        ax.barh(y, width, left=start, height=0.6, color=colour)
        ax.text(start + width + 3, y, _detail(span), va="center", fontsize=8.5)
    ax.set_yticks(
        range(len(rows)), ["   " * depth + span["name"] for depth, span in rows], fontsize=9
    )
    for tick in ax.get_yticklabels():
        tick.set_fontfamily("monospace")
        tick.set_horizontalalignment("left")
    ax.tick_params(axis="y", length=0, pad=190)
    ax.invert_yaxis()
    end = max((_time(span["end_time"]) - origin) * 1e3 for _, span in rows)
    ax.set_xlim(0, end * 1.3)
    ax.set_xlabel("milliseconds since the agent started")
    ax.set_title("One tether.run_agent: a tool runs a hedged race, the loser is cancelled")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "otel_trace.png")
    parser.add_argument("--jsonl", type=Path, default=ROOT / "docs" / "otel_trace.jsonl")
    args = parser.parse_args()
    spans = record()
    args.jsonl.write_text("".join(json.dumps(span) + "\n" for span in spans))
    draw(spans, args.png)
    for depth, span in _ordered(spans):
        print("  " * depth + span["name"], _detail(span))


if __name__ == "__main__":
    main()
