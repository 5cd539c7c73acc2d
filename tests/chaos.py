"""The chaos engine: seeded schedules of guarded streams, faults and triggers, and their verdict.

Shared by the suite (``tests/test_soak.py``: small schedules, shrunk by hypothesis) and the
soak (``benchmarks/soak.py``: 10,000 streams per backend). Every stream gets a fault and a
trigger; after the run, the emulator's ledger and the client's pool must show the four
promises kept: no orphan, no hang, no swallowed cancellation, no connection left checked out.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from typing import Literal, get_args

import anyio
import attrs
import openai

import tether
from tests.support import Boom, read_deltas
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

Fault = Literal[
    "none",
    "drop",
    "cancel_5xx",
    "cancel_hangs",
    "late_created",
    "429_first",
    "slow_cancel",
    "best_effort",
]
Trigger = Literal[
    "complete",
    "break",
    "exception",
    "explicit",
    "move_on_after",
    "fail_after",
    "scope_deadline",
    "scope_cancel",
    "before_created",
    "race_lost",
    "native_timeout",
    "queued",
]
FAULTS: tuple[Fault, ...] = get_args(Fault)
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)
GRACE = 1.0
HANGING_GRACE = 0.2  # grace given to streams whose cancel hangs, to keep the run short
OPEN_BOUND = 5.0  # first_event_timeout of a stream cancelled while it opens (before_created)
RATE = 400.0  # tokens/s of every chaos model
LENGTH = 60


def chaos_models() -> dict[str, EmulatedModel]:
    """One emulator model per fault."""
    faults: dict[Fault, Faults] = {
        "none": Faults(),
        "drop": Faults(drop_after=6),
        "cancel_5xx": Faults(cancel_failures=2),
        "cancel_hangs": Faults(cancel_hangs=True),
        "late_created": Faults(created_delay=0.05),
        "429_first": Faults(fail_before_stream=(429,)),
        "slow_cancel": Faults(cancel_delay=0.05),
        "best_effort": Faults(cancel_best_effort=5),
    }
    models = {
        f"chaos-{name}": EmulatedModel(ttft=0.0, tokens_per_s=RATE, length=LENGTH, faults=fault)
        for name, fault in faults.items()
    }
    models["chaos-winner"] = EmulatedModel(ttft=0.0, tokens_per_s=RATE, length=3)  # wins every race
    return models


@attrs.frozen
class Step:
    """One stream of a schedule: what goes wrong, and how the caller stops reading."""

    fault: Fault
    trigger: Trigger
    after: int  # output deltas read before the trigger (0..)


def random_schedule(rng: random.Random, n: int) -> list[Step]:
    return [Step(rng.choice(FAULTS), rng.choice(TRIGGERS), rng.randrange(0, 12)) for _ in range(n)]


@attrs.define
class Record:
    step: Step
    outcome: tether.StreamOutcome | None = None
    violation: str | None = None
    cleanup: float = 0.0  # seconds from the trigger to the end of the guarded block
    response_ids: list[str] = attrs.Factory(list)  # every response this step created


async def run_step(client: openai.AsyncOpenAI, record: Record) -> None:
    """Run one stream; record a violation of the promises, if any."""
    step = record.step
    model = f"chaos-{step.fault}"
    grace = HANGING_GRACE if step.fault == "cancel_hangs" else GRACE
    trigger = step.trigger
    if (
        trigger == "native_timeout"
        and running_backend() == "asyncio"
        and sys.version_info < (3, 11)
    ):
        trigger = "fail_after"  # asyncio.timeout (and Task.cancelling) came with Python 3.11
    marks: dict[str, float] = {}
    stream: tether.GuardedStream | None = None

    def mark() -> None:
        marks["trigger"] = anyio.current_time()

    try:
        if trigger in ("scope_deadline", "scope_cancel"):
            try:
                async with tether.open_scope(client, grace=grace, deadline=3600) as scope:
                    async with tether.guarded_stream(scope, model=model, input="x") as stream:
                        await read_deltas(stream, step.after)
                        mark()
                        if trigger == "scope_cancel":
                            scope.cancel()
                        else:
                            scope._cancel_scope.deadline = anyio.current_time()  # type: ignore[union-attr]
                        await read_deltas(stream, 10**6)
                if trigger == "scope_deadline" and stream.outcome.status != "completed":
                    record.violation = "scope deadline swallowed"
            except tether.DeadlineExceeded:
                if trigger != "scope_deadline":
                    record.violation = "DeadlineExceeded without a deadline"
        elif trigger == "move_on_after":
            with anyio.move_on_after(3600) as cancel_scope:
                async with tether.guarded_stream(client, model=model, input="x", grace=grace) as s:
                    stream = s
                    await read_deltas(s, step.after)
                    mark()
                    cancel_scope.deadline = anyio.current_time()
                    await read_deltas(s, 10**6)
            if not cancel_scope.cancelled_caught and s.outcome.status != "completed":
                record.violation = "move_on_after did not see its cancellation"
        elif trigger == "fail_after":
            try:
                with anyio.fail_after(3600) as cancel_scope:
                    async with tether.guarded_stream(
                        client, model=model, input="x", grace=grace
                    ) as s:
                        stream = s
                        await read_deltas(s, step.after)
                        mark()
                        cancel_scope.deadline = anyio.current_time()
                        await read_deltas(s, 10**6)
                if s.outcome.status != "completed":
                    record.violation = "fail_after did not raise TimeoutError"
            except TimeoutError:
                pass
        elif trigger == "before_created":
            # A deadline that lands while the request is in flight (under the open's shield).
            guarded = tether.guarded_stream(
                client, model=model, input="x", grace=grace, first_event_timeout=OPEN_BOUND
            )
            stream = guarded
            mark()
            with anyio.move_on_after(0.002) as cancel_scope:
                async with guarded:
                    await read_deltas(guarded, 10**6)
            if not cancel_scope.cancelled_caught and guarded.outcome.status != "completed":
                record.violation = "a cancellation while opening was swallowed"
        elif trigger == "race_lost":
            # Two attempts with the fault against one that finishes first: both lose.
            requests = [{"model": model, "input": "x"}] * 2 + [
                {"model": "chaos-winner", "input": "x"}
            ]
            async with tether.open_scope(client, grace=grace) as scope:
                mark()
                result = await tether.race(scope, requests)
            for loser in result.losers:
                if loser.outcome is not None and loser.outcome.reason not in (
                    "race_lost",
                    "completed",
                ):
                    record.violation = f"a loser ended {loser.outcome.reason!r}"
            record.outcome = result.winner.outcome
            record.response_ids = [
                a.outcome.response_id
                for a in result.attempts
                if a.outcome is not None and a.outcome.response_id
            ]
            record.cleanup = result.ended_at - result.decided_at
            return
        elif trigger == "native_timeout":
            # The backend's own timeout, not anyio's: asyncio.timeout (a native Task.cancel
            # that anyio cannot shield) or trio.fail_after.
            backend = running_backend()
            try:
                if backend == "asyncio":
                    import asyncio

                    async with asyncio.timeout(3600) as timeout:
                        async with tether.guarded_stream(
                            client, model=model, input="x", grace=grace
                        ) as s:
                            stream = s
                            await read_deltas(s, step.after)
                            mark()
                            timeout.reschedule(asyncio.get_running_loop().time())
                            await read_deltas(s, 10**6)
                else:
                    import trio

                    with trio.fail_after(3600) as cancel_scope:
                        async with tether.guarded_stream(
                            client, model=model, input="x", grace=grace
                        ) as s:
                            stream = s
                            await read_deltas(s, step.after)
                            mark()
                            cancel_scope.deadline = trio.current_time()
                            await read_deltas(s, 10**6)
                if s.outcome.status != "completed":
                    record.violation = "the native timeout did not raise its error"
            except Exception as exc:  # TimeoutError (asyncio) or trio.TooSlowError
                if type(exc).__name__ not in ("TimeoutError", "TooSlowError"):
                    raise
        elif trigger == "queued":
            # A stream queued behind a busy max_concurrency slot, cancelled while it waits.
            async with tether.open_scope(client, grace=grace, max_concurrency=1) as scope:
                async with tether.guarded_stream(scope, model=model, input="x") as s:
                    stream = s
                    queued = tether.guarded_stream(scope, model=model, input="queued")
                    with anyio.CancelScope() as waiting:
                        async with anyio.create_task_group() as tg:

                            async def wait_in_queue() -> None:
                                async with queued:
                                    pass

                            tg.start_soon(wait_in_queue)
                            await anyio.wait_all_tasks_blocked()
                            mark()
                            waiting.cancel()
                    if queued.outcome.response_id is not None:
                        record.violation = "a stream cancelled in the queue was sent"
                    await read_deltas(s, step.after)
        elif trigger == "exception":
            boom = Boom()
            try:
                async with tether.guarded_stream(client, model=model, input="x", grace=grace) as s:
                    stream = s
                    await read_deltas(s, step.after)
                    mark()
                    raise boom
            except Boom as caught:
                if caught is not boom:
                    record.violation = "the body's exception was replaced"
            else:  # pragma: no cover - would be a bug
                record.violation = "the body's exception was swallowed"
        else:  # complete, break, explicit
            async with tether.guarded_stream(client, model=model, input="x", grace=grace) as s:
                stream = s
                if trigger == "complete":
                    async for _ in s:
                        pass
                    mark()
                else:
                    await read_deltas(s, step.after)
                    mark()
                    if trigger == "explicit":
                        await s.cancel()
    except openai.APIError as exc:  # e.g. a 429 that outlasted the SDK's retries: fine
        record.violation = None if step.fault == "429_first" else f"unexpected {exc!r}"
    outcome = None
    if stream is not None:
        try:
            outcome = stream.outcome
        except RuntimeError:  # never entered
            outcome = None
    if stream is not None and outcome is not None:
        record.outcome = stream.outcome
        if stream.outcome.response_id:
            record.response_ids = [stream.outcome.response_id]
        if "trigger" in marks:
            record.cleanup = stream.outcome.ended_at - marks["trigger"]


@attrs.frozen
class Verdict:
    """The soak's figures."""

    streams: int
    faults: dict[str, int]
    triggers: dict[str, int]
    violations: list[str]
    orphans: int
    orphans_excused: (
        int  # responses whose cancel endpoint hung past grace (the API's own limit: docs/design.md)
    )
    hangs: int  # cleanups longer than grace + slack
    p99_cleanup_over_grace: float
    p99_seconds_past_grace: float  # scheduling slack: how long cleanups ran past their grace
    connections_checked_out: int

    @property
    def ok(self) -> bool:
        return (
            not self.violations
            and not self.orphans
            and not self.hangs
            and not (self.connections_checked_out)
        )


def running_backend() -> str:
    """The running backend's name."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio"


def requests_in_flight(client: openai.AsyncOpenAI) -> int:
    return len(client._client._transport._pool._requests)  # type: ignore[attr-defined]


async def run_schedule(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    schedule: list[Step],
    *,
    concurrency: int = 24,
    slack: float = 2.0,
) -> Verdict:
    """Run *schedule* (at most *concurrency* streams at once) and judge it.

    A hang is a cleanup that outlasts its bound (`_bound`) by more than *slack*: the
    emulator shares the process (and its GIL) with the client, and the run keeps the CPU
    busy, so a cleanup's end waits for the loop (and for the cyclic GC of a big test
    process: hundreds of milliseconds); a wait that is not bounded takes far longer.
    """
    records = [Record(step) for step in schedule]
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(record: Record) -> None:
        async with limiter:
            await run_step(client, record)

    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(one, record)

    hanging = {rid for r in records if r.step.fault == "cancel_hangs" for rid in r.response_ids}
    orphans = emulator.ledger.orphans()
    excused = [o for o in orphans if o.id in hanging]
    # Clean up what the hanging cancels left, so the next run starts clean.
    async with emulator.async_client(max_retries=0) as other:
        for orphan in excused:
            await other.responses.cancel(orphan.id)

    ratios = sorted(
        r.cleanup / (HANGING_GRACE if r.step.fault == "cancel_hangs" else GRACE)
        for r in records
        if r.outcome is not None and r.step.trigger != "complete"
    )
    p99 = _p99(ratios)
    past = _p99(
        sorted(
            max(0.0, r.cleanup - (HANGING_GRACE if r.step.fault == "cancel_hangs" else GRACE))
            for r in records
            if r.outcome is not None and r.step.trigger != "complete"
        )
    )
    hangs = [r for r in records if r.cleanup > _bound(r) + slack]
    return Verdict(
        streams=len(records),
        faults=dict(Counter(r.step.fault for r in records)),
        triggers=dict(Counter(r.step.trigger for r in records)),
        violations=[f"{r.step}: {r.violation}" for r in records if r.violation],
        orphans=len(orphans) - len(excused),
        orphans_excused=len(excused),
        hangs=len(hangs),
        p99_cleanup_over_grace=p99,
        p99_seconds_past_grace=past,
        connections_checked_out=requests_in_flight(client),
    )


def _bound(record: Record) -> float:
    """How long its cleanup may take: its grace, after the open's own bound if the trigger
    landed while it opened (the request is out: the id must be learnt, then cancelled)."""
    grace = HANGING_GRACE if record.step.fault == "cancel_hangs" else GRACE
    return grace + (OPEN_BOUND if record.step.trigger == "before_created" else 0.0)


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0.0


def emulator_for_chaos(seed: int = 0) -> ResponsesEmulator:
    return ResponsesEmulator(models=chaos_models(), seed=seed)
