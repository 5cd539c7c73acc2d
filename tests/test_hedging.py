"""Hedging: the staggered launcher (virtual time), the P² sketch, the budget, adaptive races."""

from __future__ import annotations

import math
import random
import statistics
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import settled
from tether import adaptive, race
from tether._quantile import P2Quantile
from tether._race import Progress, launch_staggered
from tether.races import RaceAttempt, RaceResult
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

if TYPE_CHECKING:
    from collections.abc import Callable

    import openai


# ----------------------------------------------------- the launcher, in virtual time

Started = list[tuple[int, RaceAttempt.Trigger, float]]


async def launch(
    count: int,
    signals: Progress,
    delay: float | None,
    script: Callable[[Progress], object] | None = None,
    allow_hedge: Callable[[], bool] = lambda: True,
) -> Started:
    """Run the launcher with fake attempts; *script* drives the signals meanwhile."""
    started: Started = []

    async def start(index: int, trigger: RaceAttempt.Trigger) -> None:
        started.append((index, trigger, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        if script is not None:
            tg.start_soon(script, signals)  # type: ignore[arg-type]
        await launch_staggered(count, start, signals, lambda _: delay, allow_hedge)
        tg.cancel_scope.cancel()
    return started


@pytest.mark.virtual_time
async def test_hedge_starts_the_next_attempt_after_each_silent_stagger() -> None:
    started = await launch(3, Progress(3), delay=1.5)
    assert started == [(0, "primary", 0.0), (1, "silence", 1.5), (2, "silence", 3.0)]


@pytest.mark.virtual_time
async def test_no_stagger_starts_every_attempt_at_once() -> None:
    started = await launch(3, Progress(3), delay=None)
    assert started == [(0, "primary", 0.0), (1, "parallel", 0.0), (2, "parallel", 0.0)]


@pytest.mark.virtual_time
async def test_failure_starts_the_next_attempt_at_once() -> None:
    async def script(signals: Progress) -> None:
        await anyio.sleep(0.25)
        signals.ended(0, failed=True)

    started = await launch(2, Progress(2), delay=10.0, script=script)
    assert started == [(0, "primary", 0.0), (1, "failure", 0.25)]


@pytest.mark.virtual_time
async def test_streaming_attempt_holds_back_hedges_until_it_fails() -> None:
    async def script(signals: Progress) -> None:
        await anyio.sleep(0.5)
        signals.first_token(0)
        await anyio.sleep(4.5)
        signals.ended(0, failed=True)

    started = await launch(2, Progress(2), delay=1.0, script=script)
    assert started == [(0, "primary", 0.0), (1, "failure", 5.0)]


@pytest.mark.virtual_time
async def test_hedge_waits_for_a_streamer_to_stop_before_hedging_a_silent_attempt() -> None:
    """Attempt 1 is silent past its stagger while 0 streams: 2 starts when 0 stops streaming."""

    async def script(signals: Progress) -> None:
        await anyio.sleep(1.2)
        signals.first_token(0)  # 0 was silent (1 started at 1.0), now it streams
        await anyio.sleep(2.0)
        signals.ended(0, failed=True)

    started = await launch(3, Progress(3), delay=1.0, script=script)
    assert started == [(0, "primary", 0.0), (1, "silence", 1.0), (2, "silence", 3.2)]


@pytest.mark.virtual_time
async def test_refused_hedge_is_asked_again_after_each_stagger() -> None:
    answers = iter([False, False, True])
    asked: list[float] = []

    def allow_hedge() -> bool:
        asked.append(anyio.current_time())
        return next(answers)

    started = await launch(2, Progress(2), delay=1.0, allow_hedge=allow_hedge)
    assert asked == [1.0, 2.0, 3.0]
    assert started == [(0, "primary", 0.0), (1, "silence", 3.0)]


@pytest.mark.virtual_time
async def test_refused_hedge_still_starts_the_next_attempt_on_failure() -> None:
    async def script(signals: Progress) -> None:
        await anyio.sleep(7.5)
        signals.ended(0, failed=True)

    started = await launch(2, Progress(2), delay=1.0, script=script, allow_hedge=lambda: False)
    assert started == [(0, "primary", 0.0), (1, "failure", 7.5)]


@pytest.mark.virtual_time
async def test_each_attempt_waits_its_own_stagger_after_a_failure_then_a_silence() -> None:
    """Attempt 0 fails at 0.5 (1 starts at once); 1 stays silent its stagger (2 at 2.5)."""

    async def script(progress: Progress) -> None:
        await anyio.sleep(0.5)
        progress.ended(0, failed=True)

    started = await launch(3, Progress(3), delay=2.0, script=script)
    assert started == [(0, "primary", 0.0), (1, "failure", 0.5), (2, "silence", 2.5)]


# ----------------------------------------------------------------- the P² sketch


def sample(distribution: str, rng: random.Random) -> float:
    if distribution == "lognormal":
        return rng.lognormvariate(math.log(0.05), 1.0)
    if distribution == "exponential":
        return rng.expovariate(10.0)
    return rng.uniform(0.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(300, 3000),
    quantile=st.sampled_from([0.5, 0.9, 0.95]),
    distribution=st.sampled_from(["lognormal", "exponential", "uniform"]),
)
def test_p2_estimate_lies_between_the_exact_neighbouring_quantiles(
    seed: int, size: int, quantile: float, distribution: str
) -> None:
    """Within ``2 / sqrt(n)`` in rank of ``statistics.quantiles`` (its sampling noise is 0.3/sqrt(n))."""
    rng = random.Random(seed)
    data = [sample(distribution, rng) for _ in range(size)]
    sketch = P2Quantile(quantile)
    for x in data:
        sketch.add(x)
    tolerance = 2 / math.sqrt(size)
    cuts = statistics.quantiles(data, n=1000, method="inclusive")  # cuts[i]: quantile (i+1)/1000
    low = cuts[max(0, round((quantile - tolerance) * 1000) - 1)]
    high = cuts[min(998, round((quantile + tolerance) * 1000) - 1)]
    assert low <= sketch.value <= high


def test_p2_estimate_converges_as_observations_accumulate() -> None:
    rng = random.Random(7)
    data = [rng.lognormvariate(math.log(0.05), 1.0) for _ in range(50_000)]
    sketch = P2Quantile(0.9)
    for x in data:
        sketch.add(x)
    exact = statistics.quantiles(data, n=10)[8]
    assert sketch.value == pytest.approx(exact, rel=0.02)


@given(st.lists(st.floats(0, 10), min_size=1, max_size=4))
def test_p2_is_exact_before_five_observations(data: list[float]) -> None:
    sketch = P2Quantile(0.5)
    for x in data:
        sketch.add(x)
    assert sketch.value == pytest.approx(statistics.median(data))


def test_p2_refuses_a_quantile_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"quantile.*1\.5"):
        P2Quantile(1.5)


# ------------------------------------------------------------------- the budget


@given(
    ratio=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.5]),
    ops=st.lists(st.booleans(), max_size=500),
)
def test_budget_caps_hedges_at_the_ratio_of_primaries(ratio: float, ops: list[bool]) -> None:
    """Whatever the mix of primaries (True) and hedge requests (False), hedges <= ratio x primaries."""
    budget = adaptive(budget=ratio).throttle
    for is_primary in ops:
        if is_primary:
            budget.on_primary()
        else:
            budget.try_spend()
        assert budget.hedges <= ratio * budget.primaries + 1e-9


def test_budget_grants_one_hedge_per_twenty_primaries_at_five_percent() -> None:
    budget = adaptive(budget=0.05).throttle
    granted = 0
    for _ in range(200):
        budget.on_primary()
        granted += budget.try_spend()
    assert granted == 10


def test_budget_saves_at_most_max_tokens() -> None:
    budget = adaptive(budget=0.5, max_tokens=3).throttle
    for _ in range(100):
        budget.on_primary()
    assert sum(budget.try_spend() for _ in range(10)) == 3


# ------------------------------------------------------- the output-token account

Op = tuple[int, int, int, int]
"""(kind, which race, the winner's tokens (0: nothing won), each loser's cost in % of its hold);
kind 0 opens a race, 1 asks for a hedge in a live race, 2 settles one."""

_race_ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 20), st.integers(0, 30), st.integers(0, 100)),
    min_size=50,
    max_size=150,
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])  # long schedules
@given(ratio=st.sampled_from([0.0, 0.05, 0.2, 0.5]), ops=_race_ops)
def test_losers_tokens_never_exceed_the_token_budget_of_the_winners_tokens(
    ratio: float, ops: list[Op]
) -> None:
    """Any interleaving of concurrent races, hedges and settlements, any answer lengths: at every
    step the losers' tokens plus what live hedges hold stay within ratio x the winners' tokens,
    as long as a loser costs at most the reservation its hedge was granted."""
    stagger = adaptive(budget=1.0, token_budget=ratio)
    cost = stagger.cost
    live: list[list[float]] = []  # per open race: what each of its hedges holds
    for kind, which, winner, percent in ops:
        if kind == 0:
            stagger.throttle.on_primary()
            live.append([])
        elif kind == 1 and live:
            held = stagger.try_hedge()
            if held is not None:
                live[which % len(live)].append(held)
        elif kind == 2 and live:
            holds = live.pop(which % len(live))
            losers = [math.floor(h * percent / 100) for h in holds]
            stagger.settle(sum(holds), winner or None, losers)
        assert cost.spent + cost.held <= ratio * cost.won + 1e-6
    assert cost.held == pytest.approx(sum(sum(h) for h in live))


def test_token_budget_reserves_the_longest_answer_for_each_hedge() -> None:
    budget = adaptive(token_budget=0.05).cost
    assert budget.try_reserve() is None  # no answer seen: nothing to reserve against
    for _ in range(39):
        budget.on_won(20)  # 39 tokens of credit: one reservation of 20
    assert budget.try_reserve() == 20.0
    assert budget.try_reserve() is None
    assert budget.refused == 2


def test_loser_is_charged_what_the_server_may_have_generated_while_it_was_stopped() -> None:
    budget = adaptive(token_budget=0.05).cost
    budget.on_won(20)
    assert budget.loser_cost(0, 0.001) == 20  # no rate known yet: a whole answer
    budget.on_won(20, seconds=0.01)  # 2,000 tokens a second
    assert budget.loser_cost(0, 0.002) == 4  # unseen: 2 ms of generation at that rate
    assert budget.loser_cost(7, 0.002) == 7  # what the client saw, if more
    assert budget.loser_cost(0, 5.0) == 20  # a slow stop: at most one answer


def test_token_budget_refusal_spends_no_request_token() -> None:
    stagger = adaptive(budget=1.0)
    stagger.throttle.on_primary()
    assert stagger.try_hedge() is None  # the output-token account is empty
    assert stagger.throttle.tokens == 1.0
    assert stagger.throttle.hedges == 0


def test_token_budget_in_debt_refuses_hedges_until_the_winners_pay_it_back() -> None:
    stagger = adaptive(budget=1.0, token_budget=0.5)
    stagger.settle(0.0, 10, [])  # credit 5
    stagger.settle(0.0, 10, [])  # credit 10: one answer of 10
    stagger.throttle.on_primary()
    assert stagger.try_hedge() == 10.0
    stagger.settle(10.0, 10, [40])  # a loser longer than any answer seen: 15 - 40
    assert stagger.cost.available == -25.0
    stagger.throttle.on_primary()
    assert stagger.try_hedge() is None  # longest is now 40: needs 65 more credit
    for _ in range(13):
        stagger.settle(0.0, 10, [])
    assert stagger.cost.available == 40.0
    assert stagger.try_hedge() == 40.0


# -------------------------------------------------------------------- adaptive


def test_adaptive_uses_its_initial_stagger_until_enough_samples() -> None:
    stagger = adaptive(quantile=0.9, min_samples=20, initial=2.0)
    rng = random.Random(3)
    for _ in range(19):
        stagger.observe("m", rng.uniform(0.0, 0.1))
    assert stagger.stagger_for("m") == 2.0
    assert stagger.stagger_for("other") == 2.0
    for _ in range(500):
        stagger.observe("m", rng.uniform(0.0, 0.1))
    assert stagger.stagger_for("m") == pytest.approx(0.09, abs=0.01)
    assert stagger.samples("m") == 519


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"quantile": 1.0}, ValueError, "quantile"),
        ({"quantile": "p90"}, TypeError, "quantile"),
        ({"budget": -0.1}, ValueError, "budget"),
        ({"min_samples": 2}, ValueError, "min_samples"),
        ({"initial": -1}, ValueError, "initial"),
        ({"key": "model"}, TypeError, "key must be a callable.*'model'"),
    ],
)
def test_adaptive_refuses_bad_arguments(
    kwargs: dict[str, object], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=shown):
        adaptive(**kwargs)  # type: ignore[arg-type]


async def test_adaptive_race_learns_each_models_time_to_first_token(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    stagger = adaptive()
    for _ in range(3):
        await race(
            client, [{"model": "fast", "input": "hi"}] * 2, win="first_token", stagger=stagger
        )
    assert stagger.samples("fast") == 3
    assert stagger.throttle.primaries == 3
    assert stagger.throttle.hedges == 0


async def test_adaptive_race_out_of_budget_sends_no_hedge(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["thinks"] = EmulatedModel(ttft=0.2, tokens_per_s=5000.0, length=5)
    stagger = adaptive(budget=0.0, initial=0.0)
    result = await race(client, [{"model": "thinks", "input": "hi"}] * 2, stagger=stagger)
    assert result.winner.index == 0
    assert result.hedges == 0
    assert emulator.ledger.requests == 1
    assert stagger.throttle.refused == 1


async def test_adaptive_race_out_of_budget_still_replaces_a_failed_attempt(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["broken"] = EmulatedModel(ttft=0.0, faults=Faults(fail_before_stream=(500,)))
    stagger = adaptive(budget=0.0)
    result = await race(
        client.with_options(max_retries=0),
        [{"model": "broken", "input": "hi"}, {"model": "fast", "input": "hi"}],
        stagger=stagger,
    )
    assert result.winner.index == 1
    assert result.winner.trigger == "failure"


async def test_adaptive_race_sends_no_hedge_before_the_winners_tokens_cover_one_answer(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """A fresh account holds nothing: hedges start once the winners paid in one whole answer."""
    emulator.models["thinks"] = EmulatedModel(ttft=0.05, tokens_per_s=5000.0, length=5)
    stagger = adaptive(budget=1.0, initial=0.0, token_budget=0.5)
    first = await race(client, [{"model": "thinks", "input": "hi"}] * 2, stagger=stagger)
    assert first.hedges == 0
    assert stagger.cost.refused >= 1
    assert stagger.cost.won == 5  # 0.5 x 5 = 2.5 tokens of credit: short of one answer (5)
    second = await race(client, [{"model": "thinks", "input": "hi"}] * 2, stagger=stagger)
    assert second.hedges == 0
    third = await race(client, [{"model": "thinks", "input": "hi"}] * 2, stagger=stagger)
    assert third.hedges == 1  # 0.5 x 10 = 5: one answer's worth
    assert emulator.ledger.requests == 4


async def test_adaptive_race_charges_each_loser_its_tokens_and_releases_its_hold(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["thinks"] = EmulatedModel(ttft=0.05, tokens_per_s=5000.0, length=5)
    stagger = adaptive(budget=1.0, initial=0.0, token_budget=1.0)
    stagger.settle(0.0, 5, [])  # one answer of 5 paid in: one hedge's reservation
    result = await race(client, [{"model": "thinks", "input": "hi"}] * 2, stagger=stagger)
    assert result.hedges == 1
    (loser,) = result.losers
    assert loser.outcome is not None
    assert result.winner.outcome is not None
    assert result.winner.outcome.usage is not None
    assert stagger.cost.won == 5 + result.winner.outcome.usage.output_tokens
    usage = loser.outcome.usage  # a loser that completed before its cancel reports usage
    seen = loser.outcome.deltas if usage is None else usage.output_tokens
    assert seen <= stagger.cost.spent <= 5  # what it sent, at most one answer
    assert stagger.cost.held == 0.0


async def test_adaptive_race_charges_a_loser_what_the_server_reports_it_generated() -> None:
    """Where the server reports a cancelled response's usage, the loser's cost is its count
    (read back by the stop), not the upper bound charged when it says nothing."""
    thinks = EmulatedModel(ttft=0.05, tokens_per_s=50.0, length=200)
    stagger = adaptive(budget=1.0, initial=0.0, token_budget=1.0)
    stagger.settle(0.0, 200, [])  # one long answer paid in: one hedge's reservation
    async with ResponsesEmulator(models={"thinks": thinks}, usage_on_cancel=True) as emulator:
        async with emulator.async_client() as client:
            result = await race(
                client, [{"model": "thinks", "input": "hi"}] * 2, win="first_token", stagger=stagger
            )
        assert result.hedges == 1
        (loser,) = result.losers
        assert loser.outcome is not None
        record = await settled(emulator, loser.outcome.response_id)
    assert loser.outcome.receipt is not None
    reported = loser.outcome.receipt.output_tokens
    assert reported == record.tokens_generated
    assert stagger.cost.spent == max(record.tokens_generated, loser.outcome.deltas)
    assert stagger.cost.held == 0.0


async def test_adaptive_race_charges_nothing_for_a_loser_stopped_before_its_first_output(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The stop's read-back shows no output item: the loser cost nothing, so the budget
    keeps what it would otherwise charge for tokens the server never generated."""
    emulator.models["stuck"] = EmulatedModel(ttft=60.0, tokens_per_s=50.0, length=20)
    emulator.models["quick"] = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=20)
    stagger = adaptive(budget=1.0, initial=0.0, token_budget=1.0)
    stagger.settle(0.0, 20, [])  # one answer of 20 paid in: one hedge's reservation
    requests = [{"model": "stuck", "input": "hi"}, {"model": "quick", "input": "hi"}]
    results: list[RaceResult] = []

    async def run() -> None:
        results.append(await race(client, requests, win="first_token", stagger=stagger))

    # Both requests reach the server before either answers: the first one is a loser that
    # was sent, not an attempt skipped because the hedge won before it left.
    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await emulator.wait_for(lambda ledger: len(ledger) == 2)
            hold.release()
    (result,) = results
    assert result.hedges == 1
    (loser,) = result.losers
    assert loser.outcome is not None
    assert loser.outcome.receipt is not None
    assert loser.outcome.receipt.output_tokens == 0
    assert (await settled(emulator, loser.outcome.response_id)).tokens_generated == 0
    assert (stagger.cost.spent, stagger.cost.held) == (0, 0.0)


def test_adaptive_defaults_hedge_at_the_p80_within_a_thirty_percent_budget() -> None:
    """The defaults that met the tail goal (docs/benchmarks/race.md), not a starving budget."""
    stagger = adaptive()
    assert stagger.quantile == 0.8
    assert stagger.throttle.ratio == 0.3
    for _ in range(10):
        stagger.throttle.on_primary()
    assert sum(stagger.throttle.try_spend() for _ in range(5)) == 3


def test_adaptive_learns_separately_in_each_bucket_of_its_key() -> None:
    stagger = adaptive(key=lambda request: (request["model"], len(request["input"]) > 10))
    short, long = {"model": "m", "input": "hi"}, {"model": "m", "input": "x" * 100}
    assert stagger.bucket(short) == ("m", False)
    for _ in range(30):
        stagger.observe(stagger.bucket(short), 0.1)
        stagger.observe(stagger.bucket(long), 1.0)
    assert stagger.stagger_for(("m", False)) == pytest.approx(0.1)
    assert stagger.stagger_for(("m", True)) == pytest.approx(1.0)
    assert stagger.stagger_for("m") == stagger.initial  # nothing learned under the bare model


async def test_adaptive_race_learns_in_the_bucket_its_key_picks(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    stagger = adaptive(key=lambda request: request["input"])
    for text in ("a", "a", "b"):
        await race(
            client, [{"model": "fast", "input": text}] * 2, win="first_token", stagger=stagger
        )
    assert stagger.samples("a") == 2
    assert stagger.samples("b") == 1
    assert stagger.samples("fast") == 0
