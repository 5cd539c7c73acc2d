"""tether.sync against the raw sync SDK, per client CPU-second, the emulator in another process.

Measured in the client process with ``time.process_time()`` (the CPU of every thread: the
caller's and the portal's), against an emulator served by a child process, so its CPU is
not counted:

1. Throughput: events per client CPU-second for a 5,000-token response read to the end,
   (a) raw ``client.responses.create(stream=True)`` iterated in the caller's thread,
   (b) ``tether.sync.guarded_stream(client, ...)`` with a bare client (a portal per block),
   (c) ``tether.sync.guarded_stream(scope, ...)`` in one ``tether.sync.open_scope`` (reused);
   and, to say where the rest goes (in an ``open_scope``, on its portal's loop):
   (d) the raw ``AsyncOpenAI`` stream of the same response, read on the portal's loop
   (``scope.run``: no hand-off, the caller only waits for the count), and
   (e) ``tether.guarded_stream`` read there the same way: (c) minus (e) is the
   read-ahead's hand-off to the caller's thread, (e) minus (d) the guard, and (d) the
   async SDK's own stack.
2. Per-block cost: client CPU milliseconds per short (5-token) response, same contenders.

Each round measures the raw sync SDK and every contender on both portal backends (rounds
outermost, a first round dropped as warm-up); a ratio is the median of the per-round ratios
to that round's raw sync SDK, with their IQR, so that the machine's drift over a run hits a
contender and its baseline alike.

Run: ``python benchmarks/bench_sync.py`` (writes ``docs/benchmarks/sync.md``,
``docs/benchmarks/sync.png`` and ``benchmarks/results/sync.json``). ``--label before``
writes only ``benchmarks/results/sync-before.json`` (run it against the old module with
``PYTHONPATH=<old checkout>/src``); the report then shows it beside the new figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

import tether
import tether.sync
from tether.testing import EmulatedModel, ResponsesEmulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {
    "bulk": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=5000),
    "short": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=5),
}


def serve() -> None:
    """The child process: serve the emulator, print its base URL, stop when stdin closes."""
    with ResponsesEmulator(models=MODELS, seed=7) as emu:
        print(emu.base_url, flush=True)
        sys.stdin.read()


def _cpu(fn: Any, *args: Any) -> tuple[int, float]:
    """(count, client CPU seconds) of one call of *fn*."""
    started = time.process_time()
    count = fn(*args)
    return count, time.process_time() - started


def raw(client: openai.OpenAI, model: str) -> int:
    count = 0
    with client.responses.create(model=model, input="hi", stream=True, background=True) as stream:
        for _ in stream:
            count += 1
    return count


def guarded_bare(client: openai.OpenAI, model: str) -> int:
    count = 0
    with tether.sync.guarded_stream(client, model=model, input="hi") as stream:
        for _ in stream:
            count += 1
    return count


def guarded_scope(scope: Any, model: str) -> int:
    count = 0
    with tether.sync.guarded_stream(scope, model=model, input="hi") as stream:
        for _ in stream:
            count += 1
    return count


def on_the_loop(scope: Any, model: str, guarded: bool) -> int:
    """Read the response on the portal's loop (``scope.run``): the raw async SDK stream,
    or ``tether.guarded_stream``; the caller's thread only waits for the count."""
    twin = scope.twin(scope.client, 0)

    async def read() -> int:
        count = 0
        if guarded:
            async with tether.guarded_stream(twin, model=model, input="hi") as stream:
                async for _ in stream:
                    count += 1
            return count
        stream = await twin.responses.create(model=model, input="hi", stream=True, background=True)
        async with stream:
            async for _ in stream:
                count += 1
        return count

    return scope.run(read, "reading on the loop")


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(first, third) quartile of the rounds: the run-to-run spread."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def backends() -> list[str]:
    """The portal backends to measure (only asyncio before the redesign)."""
    from tether import _sync_portal

    return ["asyncio", "trio"] if hasattr(_sync_portal, "BACKEND") else ["asyncio"]


def run(base_url: str, rounds: int, shorts: int) -> dict[str, Any]:
    """Rounds outermost, each backend in every round, the raw sync SDK measured in every
    round of every backend: each contender's ratio is taken to the raw stream of its own
    round (the median of those per-round ratios, with their IQR), so that the machine's
    drift over the run (on a shared VM, the raw SDK's own speed moved by a fifth within one
    run) hits a contender and its baseline alike."""
    from tether import _sync_portal

    has_scope = hasattr(tether.sync, "open_scope") and hasattr(tether.sync, "Scope")
    client = openai.OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)
    eps: dict[str, list[float]] = {}
    per_block_ms: dict[str, list[float]] = {}
    eps_ratio: dict[str, list[float]] = {}
    block_ratio: dict[str, list[float]] = {}

    def note(name: str, table: dict[str, list[float]], value: float) -> None:
        table.setdefault(name, []).append(value)

    for round_ in range(rounds + 1):  # interleaved, so drift hits every contender alike
        if round_ == 1:  # the first round only warmed up (imports, schemas, pools): dropped
            for table in (eps, per_block_ms, eps_ratio, block_ratio):
                table.clear()
        for backend in backends():
            if hasattr(_sync_portal, "BACKEND"):
                _sync_portal.BACKEND = backend  # type: ignore[attr-defined]
            suffix = "" if backend == "asyncio" else f" ({backend} portal)"
            count, cpu = _cpu(raw, client, "bulk")
            raw_eps = count / cpu
            note("raw sync SDK", eps, raw_eps)

            def stream(name: str, count: int, cpu: float, raw_eps: float = raw_eps) -> None:
                note(name, eps, count / cpu)
                note(name, eps_ratio, count / cpu / raw_eps)

            count, cpu = _cpu(guarded_bare, client, "bulk")
            stream(f"tether.sync, bare client{suffix}", count, cpu)
            if has_scope:
                with tether.sync.open_scope(client) as scope:  # type: ignore[attr-defined]
                    count, cpu = _cpu(guarded_scope, scope, "bulk")
                stream(f"tether.sync, in open_scope{suffix}", count, cpu)
                with tether.sync.open_scope(client) as scope:  # type: ignore[attr-defined]
                    for guarded, name in ((False, "raw AsyncOpenAI"), (True, "guarded_stream")):
                        count, cpu = _cpu(on_the_loop, scope, "bulk", guarded)
                        stream(
                            f"where it goes: {name} read on the portal's loop{suffix}", count, cpu
                        )
            _, cpu = _cpu(lambda: sum(raw(client, "short") for _ in range(shorts)))
            raw_ms = cpu / shorts * 1000
            note("raw sync SDK", per_block_ms, raw_ms)

            def block(name: str, cpu: float, raw_ms: float = raw_ms) -> None:
                note(name, per_block_ms, cpu / shorts * 1000)
                note(name, block_ratio, cpu / shorts * 1000 / raw_ms)

            _, cpu = _cpu(lambda: sum(guarded_bare(client, "short") for _ in range(shorts)))
            block(f"tether.sync, bare client{suffix}", cpu)
            if has_scope:

                def in_scope() -> int:
                    with tether.sync.open_scope(client) as scope:  # type: ignore[attr-defined]
                        return sum(guarded_scope(scope, "short") for _ in range(shorts))

                _, cpu = _cpu(in_scope)
                block(f"tether.sync, in open_scope{suffix}", cpu)
    client.close()
    return {
        "events_per_cpu_s": {k: statistics.median(v) for k, v in eps.items()},
        "events_ratio": {k: statistics.median(v) for k, v in eps_ratio.items()},
        "events_ratio_iqr": {k: _quartiles(v) for k, v in eps_ratio.items()},
        "cpu_ms_per_block": {k: statistics.median(v) for k, v in per_block_ms.items()},
        "block_ratio": {k: statistics.median(v) for k, v in block_ratio.items()},
        "block_ratio_iqr": {k: _quartiles(v) for k, v in block_ratio.items()},
        "rounds": rounds,
        "shorts": shorts,
        "python": platform.python_version(),
        "openai": openai.__version__,
        "tether_module": tether.__file__,
    }


def _plot(now: dict[str, Any], before: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float]] = []
    if before is not None:
        for name, value in before["events_per_cpu_s"].items():
            if name != "raw sync SDK":
                rows.append((f"before: {name}", value))
    rows.extend(now["events_per_cpu_s"].items())
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    names = [name for name, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    colors = [
        "#999999" if n.startswith("before") else "#1f77b4" if "tether" in n else "#2ca02c"
        for n in names
    ]
    ax.barh(names, values, color=colors)
    raw_value = now["events_per_cpu_s"]["raw sync SDK"]
    ax.axvline(raw_value * 0.95, color="#d62728", linestyle="--", label="0.95 × raw (goal)")
    ax.set_xlabel("events per client CPU-second (higher is better)")
    ax.set_title("tether.sync vs the raw sync SDK, 5,000-event stream")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ratio_cell(run: dict[str, Any], table: str, name: str) -> str:
    low, high = run[f"{table}_iqr"][name]
    return f"{run[table][name]:.3f}× [IQR {low:.3f}-{high:.3f}]"


def report(now: dict[str, Any], before: dict[str, Any] | None) -> str:
    lines = [
        f"Measured by `python benchmarks/bench_sync.py` ({now['rounds']} interleaved rounds, "
        f"medians; Python {now['python']}, openai {now['openai']}), the emulator in another "
        "process; CPU is the client process's `time.process_time()` (every thread: the "
        "caller's and the portal's). Each round measures the raw sync SDK and every contender "
        "on both portal backends; a ratio is the median of the per-round ratios to that "
        "round's raw sync SDK, with their interquartile range. Load average (1 min) when the "
        f"report was written: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.",
        "",
        "| 5,000-event stream read to the end | events per client CPU-second "
        "| vs the raw sync SDK of the same round [IQR] |",
        "|---|---|---|",
    ]
    if before is not None:
        for name, value in before["events_per_cpu_s"].items():
            if name != "raw sync SDK":
                lines.append(
                    f"| before: {name} | {value:,.0f} | "
                    f"{_ratio_cell(before, 'events_ratio', name)} |"
                )
    for name, value in now["events_per_cpu_s"].items():
        cell = "1×" if name == "raw sync SDK" else _ratio_cell(now, "events_ratio", name)
        lines.append(f"| {name} | {value:,.0f} | {cell} |")
    lines += [
        "",
        "*Where it goes* reads the same response on the `open_scope`'s portal loop "
        "(`scope.run`), the caller's thread only waiting for the count: the raw "
        "`AsyncOpenAI` stream is the async SDK's own stack; `guarded_stream` adds tether's "
        "guard; `tether.sync` in `open_scope` adds the read-ahead's hand-off of every event "
        "to the caller's thread.",
    ]
    lines += [
        "",
        "| one short (5-token) response, open to exit | client CPU ms per block "
        "| vs the raw sync SDK of the same round [IQR] |",
        "|---|---|---|",
    ]
    if before is not None:
        for name, value in before["cpu_ms_per_block"].items():
            if name != "raw sync SDK":
                lines.append(
                    f"| before: {name} | {value:.2f} | {_ratio_cell(before, 'block_ratio', name)} |"
                )
    for name, value in now["cpu_ms_per_block"].items():
        cell = "1×" if name == "raw sync SDK" else _ratio_cell(now, "block_ratio", name)
        lines.append(f"| {name} | {value:.2f} | {cell} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shorts", type=int, default=20, help="short blocks per round")
    parser.add_argument("--label", choices=["before", "after"], default="after")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="rewrite the report from the JSON")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.render:
        saved = json.loads((RESULTS / "sync.json").read_text())
        _plot(saved["after"], saved["before"], ROOT / "docs" / "benchmarks" / "sync.png")
        (ROOT / "docs" / "benchmarks" / "sync.md").write_text(
            report(saved["after"], saved["before"])
        )
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # the child serves the new emulator
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        base_url = child.stdout.readline().strip()
        results = run(base_url, args.rounds, args.shorts)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.label == "before":
        (RESULTS / "sync-before.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return
    before_path = RESULTS / "sync-before.json"
    before = json.loads(before_path.read_text()) if before_path.exists() else None
    (RESULTS / "sync.json").write_text(json.dumps({"after": results, "before": before}, indent=2))
    _plot(results, before, ROOT / "docs" / "benchmarks" / "sync.png")
    text = report(results, before)
    (ROOT / "docs" / "benchmarks" / "sync.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
