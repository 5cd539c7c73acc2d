"""Hedging statistics: when to send a backup, learned online, within a budget.

A hedged request ("The Tail at Scale", Dean and Barroso, 2013) sends a backup only when the
first attempt is slower than usual, so the tail shrinks for some extra load. The race's
launcher (``_race.py``) decides *when* the next attempt starts; this module learns the
stagger it waits for.

[`adaptive`][tether.adaptive] learns ``stagger`` online: a P² streaming quantile estimator
per bucket (by default, per model; Jain and Chlamtac, 1985: five markers, constant memory)
tracks the time to first token, and a token bucket caps the hedges at ``budget`` of the
traffic (gRPC's hedging throttle: every race adds ``budget`` tokens, every hedge spends one).
A second account, [`TokenBudget`][tether.races.TokenBudget], caps what the hedges *cost*:
the output tokens of the losers, charged as each race settles, at ``token_budget`` of the
winners' output tokens.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

from ._validate import check_non_negative, check_number

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "AdaptiveStagger",
    "HedgeBudget",
    "P2Quantile",
    "TokenBudget",
    "Trigger",
    "adaptive",
]

Bucket: TypeAlias = Hashable
"""What an adaptive stagger learns in: by default a request's model name."""

Trigger = Literal["primary", "parallel", "silence", "failure"]
"""Why an attempt was started.

- ``primary``: the first attempt of the race.
- ``parallel``: no stagger: every attempt starts at once.
- ``silence``: the previous attempt produced no token for ``stagger`` seconds (a hedge).
- ``failure``: the previous attempt failed (or was rejected) before that.
"""


@final
class P2Quantile:
    """One quantile of a stream of numbers, in constant memory (the P² algorithm).

    Five markers track the minimum, the maximum, the target quantile and two midpoints;
    each new observation moves them by a piecewise-parabolic step. Until five observations
    have arrived, the exact quantile of those seen is returned.

    Args:
        quantile: The quantile to track, strictly between 0 and 1.

    Example:
        ```python
        p90 = P2Quantile(0.9)
        for x in range(1, 101):
            p90.add(x)
        print(round(p90.value))  # 90
        ```
    """

    def __init__(self, quantile: float) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be strictly between 0 and 1, got {quantile!r}")
        p = quantile
        self.quantile = p
        self.count = 0
        self._q: list[float] = []  # marker heights (the first five observations until full)
        self._n = [0.0, 1.0, 2.0, 3.0, 4.0]  # marker positions
        self._want = [0.0, 2 * p, 4 * p, 2 + 2 * p, 4.0]  # desired positions
        self._step = [0.0, p / 2, p, (1 + p) / 2, 1.0]

    @property
    def value(self) -> float:
        """The current estimate (``nan`` before the first observation)."""
        if self.count >= 5:
            return self._q[2]
        if not self._q:
            return math.nan
        ordered = sorted(self._q)
        rank = self.quantile * (len(ordered) - 1)
        low = math.floor(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    def add(self, x: float) -> None:
        """Take one observation into account."""
        self.count += 1
        q, n = self._q, self._n
        if self.count <= 5:
            q.append(x)
            if self.count == 5:
                q.sort()
            return
        if x < q[0]:
            q[0] = x
            k = 0
        elif x >= q[4]:
            q[4] = x
            k = 3
        else:
            k = next(i for i in range(4) if q[i] <= x < q[i + 1])
        for i in range(k + 1, 5):
            n[i] += 1
        for i in range(5):
            self._want[i] += self._step[i]
        for i in (1, 2, 3):
            d = self._want[i] - n[i]
            if (d >= 1 and n[i + 1] - n[i] > 1) or (d <= -1 and n[i - 1] - n[i] < -1):
                s = 1 if d > 0 else -1
                candidate = self._parabolic(i, s)
                if not q[i - 1] < candidate < q[i + 1]:
                    candidate = q[i] + s * (q[i + s] - q[i]) / (n[i + s] - n[i])
                q[i] = candidate
                n[i] += s

    def _parabolic(self, i: int, s: int) -> float:
        q, n = self._q, self._n
        return q[i] + s / (n[i + 1] - n[i - 1]) * (
            (n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
            + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1])
        )


@final
class HedgeBudget:
    """A token bucket that caps hedges at a fraction of the requests (gRPC's hedging throttle).

    Every primary request adds ``ratio`` tokens, up to ``max_tokens``; every hedge spends one
    and is refused when less than one is left. The bucket starts empty, so at any time
    ``hedges <= ratio * primaries``: the cap holds from the first request, not on average.

    Example:
        ```python
        budget = HedgeBudget(0.05)
        for _ in range(20):
            budget.on_primary()
        assert budget.try_spend() and not budget.try_spend()
        ```
    """

    def __init__(self, ratio: float, max_tokens: float = 10.0) -> None:
        self.ratio = ratio
        self.max_tokens = max_tokens
        self.tokens: float = 0.0
        self.primaries: int = 0
        self.hedges: int = 0
        self.refused: int = 0

    def on_primary(self) -> None:
        """Count one primary request: ``ratio`` more tokens."""
        self.primaries += 1
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        """Spend a token for one hedge; ``False`` (and nothing spent) if the bucket is short."""
        if self.tokens + 1e-9 < 1.0:  # 20 x 0.05 is 0.9999999999999999 in floating point
            self.refused += 1
            return False
        self.tokens = max(0.0, self.tokens - 1.0)
        self.hedges += 1
        return True

    def refund(self) -> None:
        """Give back the token of a hedge granted by ``try_spend`` but not sent."""
        self.tokens = min(self.max_tokens, self.tokens + 1.0)
        self.hedges -= 1


@final
class TokenBudget:
    """Caps the output tokens that hedges waste at a fraction of the winners' output tokens.

    Every race's winner adds ``ratio`` times its output tokens; every loser is charged what
    it may have produced, when its race settles (``loser_cost``: the tokens seen, or those
    the server may have generated unseen while the loser was being stopped). A hedge is granted only when what is
    left covers a *reservation*: the longest answer seen so far, the most one loser can
    produce when answers are no longer than that. The reservation is held until the race
    settles, then replaced by what its losers actually cost. So at every moment
    ``spent + held <= ratio * won``: the extra tokens stay under ``ratio`` of the useful
    ones in every run, from the first race, not on average (a loser longer than every answer
    seen before is charged in full: the account goes into debt and refuses hedges until the
    winners have paid it back). Nothing is reserved before a first answer is known: the
    account starts empty.

    Example:
        ```python
        budget = TokenBudget(0.05)
        for _ in range(20):
            budget.on_won(20)  # 20 races won with 20 tokens: 20 tokens of credit
        held = budget.try_reserve()
        assert held == 20 and budget.try_reserve() is None
        budget.settle(held, [3])  # the race's loser produced 3 tokens
        assert budget.spent == 3 and budget.available == 17
        ```
    """

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.won: int = 0
        """Output tokens of the winners."""
        self.spent: int = 0
        """Output tokens of the losers (what hedging cost)."""
        self.held: float = 0.0
        """Reserved for the hedges of races not settled yet."""
        self.longest: int = 0
        """The longest answer seen (winner or loser), in output tokens: one hedge's reservation."""
        self.refused: int = 0
        """Hedges refused because the account could not cover a reservation."""
        self.rate: float = 0.0
        """The fastest output seen (a winner's tokens per second), ``0.0`` while unknown."""

    @property
    def available(self) -> float:
        """Tokens a new hedge may still reserve: ``ratio * won - spent - held``."""
        return self.ratio * self.won - self.spent - self.held

    def try_reserve(self) -> float | None:
        """Reserve one loser's worst cost for a hedge; ``None`` (nothing held) if short."""
        amount = float(self.longest)
        if amount <= 0 or self.available + 1e-9 < amount:
            self.refused += 1
            return None
        self.held += amount
        return amount

    def release(self, amount: float) -> None:
        """Give back a reservation whose hedge was not sent."""
        self.held = max(0.0, self.held - amount)

    def on_won(self, tokens: int, seconds: float | None = None) -> None:
        """A race was won with an answer of *tokens* output tokens, streamed in *seconds*."""
        self.won += tokens
        self.longest = max(self.longest, tokens)
        if seconds is not None and seconds > 0:
            self.rate = max(self.rate, tokens / seconds)

    def loser_cost(self, seen: int, stopping: float) -> int:
        """What to charge a loser: at least the *seen* tokens, and what the server may have
        generated unseen while it was being stopped (*stopping* seconds from the decision to
        its stop's end) at the fastest rate seen, at most one longest answer.

        A ``first_token`` race decides at the winner's first token, so a loser's tokens
        are mostly ones the client never sees: those the server generates until the cancel
        reaches it. While no rate is known, a whole answer is charged.
        """
        bound = self.longest if self.rate <= 0 else math.ceil(self.rate * max(stopping, 0.0))
        return max(seen, min(self.longest, bound))

    def settle(self, held: float, losers: Sequence[int]) -> None:
        """A race is over: release what its hedges *held*, charge its *losers*' output tokens."""
        self.held = max(0.0, self.held - held)
        for tokens in losers:
            self.spent += tokens
            self.longest = max(self.longest, tokens)


def model_of(request: Mapping[str, Any]) -> Bucket:
    """The default bucket of an adaptive stagger: the request's ``model``."""
    return request.get("model")


@final
class AdaptiveStagger:
    """A stagger learned online: hedge at a quantile of each bucket's time to first token.

    Made by [`adaptive`][tether.adaptive]; pass it as ``stagger=`` to
    [`race`][tether.race] or [`race_stream`][tether.race_stream]. Keep one object for many
    races (at module level): it learns from all of them. It is not thread-safe, but safe
    across concurrent races on one event loop (every method is synchronous). A bucket is
    what ``key(request)`` returns: by default the model name, so ``stagger_for("gpt-5")``.

    Example:
        ```python
        HEDGE = tether.adaptive()
        result = await tether.race(client, [req, req, req], win="first_token", stagger=HEDGE)
        print(HEDGE.stagger_for("gpt-5"), HEDGE.throttle.hedges, HEDGE.cost.spent)
        ```
    """

    def __init__(
        self,
        *,
        quantile: float,
        budget: float,
        min_samples: int,
        initial: float,
        max_tokens: float,
        key: Callable[[Mapping[str, Any]], Bucket],
        token_budget: float = 0.05,
    ) -> None:
        self.quantile = quantile
        """The quantile of the time to first token at which a hedge starts."""
        self.min_samples = min_samples
        """Observations of a bucket before its learned quantile is used."""
        self.initial = initial
        """The stagger, in seconds, while a bucket has fewer than ``min_samples`` observations."""
        self.key = key
        """``key(request)``: the bucket a request learns in and is staggered by."""
        self.throttle: HedgeBudget = HedgeBudget(budget, max_tokens)
        """The token bucket: ``throttle.hedges``, ``throttle.primaries``, ``throttle.tokens``."""
        self.cost: TokenBudget = TokenBudget(token_budget)
        """The output-token account: ``cost.spent`` (losers) against ``cost.won`` (winners)."""
        self._sketches: dict[Bucket, P2Quantile] = {}

    def bucket(self, request: Mapping[str, Any]) -> Bucket:
        """The bucket *request* belongs to (``key(request)``)."""
        return self.key(request)

    def stagger_for(self, bucket: Bucket) -> float:
        """Seconds of silence after which a backup of a request in *bucket* starts.

        Returns:
            The learned quantile once ``min_samples`` observations arrived, else ``initial``.
        """
        sketch = self._sketches.get(bucket)
        if sketch is None or sketch.count < self.min_samples:
            return self.initial
        return max(sketch.value, 0.0)

    def observe(self, bucket: Bucket, seconds: float) -> None:
        """Record one time to first token in *bucket* (races call this; so may you)."""
        sketch = self._sketches.get(bucket)
        if sketch is None:
            sketch = self._sketches[bucket] = P2Quantile(self.quantile)
        sketch.add(seconds)

    def try_hedge(self) -> float | None:
        """Ask both budgets for one hedge: the output tokens it holds, or ``None`` if refused.

        The request bucket is asked first, then the output-token account; a hedge refused
        for its cost gets its request token back (``throttle.refused`` counts the request
        bucket's refusals, ``cost.refused`` the account's).
        """
        if not self.throttle.try_spend():
            return None
        held = self.cost.try_reserve()
        if held is None:
            self.throttle.refund()
        return held

    def settle(
        self,
        held: float,
        winner: int | None,
        losers: Sequence[int],
        winner_seconds: float | None = None,
    ) -> None:
        """One race is over: its *winner*'s output tokens (``None``: nothing won, else streamed
        in *winner_seconds*) pay in, its *losers*' costs (``cost.loser_cost``) are charged,
        and what its hedges *held* is released (races call this)."""
        if winner is not None:
            self.cost.on_won(winner, winner_seconds)
        self.cost.settle(held, losers)

    def samples(self, bucket: Bucket) -> int:
        """How many times to first token were observed in *bucket*."""
        sketch = self._sketches.get(bucket)
        return 0 if sketch is None else sketch.count

    def __repr__(self) -> str:
        buckets = ", ".join(f"{b!r}: {self.stagger_for(b):.3f}s" for b in self._sketches)
        return (
            f"<AdaptiveStagger p{self.quantile * 100:g} budget={self.throttle.ratio:g} "
            f"hedges={self.throttle.hedges}/{self.throttle.primaries} "
            f"extra_tokens={self.cost.spent}/{self.cost.won} [{buckets}]>"
        )


def adaptive(
    quantile: float = 0.8,
    budget: float = 0.3,
    *,
    min_samples: int = 20,
    initial: float = 2.0,
    max_tokens: float = 10.0,
    key: Callable[[Mapping[str, Any]], Bucket] = model_of,
    token_budget: float = 0.05,
) -> AdaptiveStagger:
    """Hedge at a learned quantile of the time to first token, within a budget of extra requests.

    Pass the result as ``stagger=`` and keep it across races. For each bucket (``key``: by
    default the model) it learns the time from request to first token (P² streaming
    quantile, constant memory; an attempt cancelled before its first token counts with the
    time it had waited, a lower bound) and starts a backup once the current attempt has been
    silent that long. A token bucket caps the backups: each race adds ``budget`` tokens (at
    most ``max_tokens`` saved), each hedge spends one, so hedges never exceed ``budget`` of
    the races. Until a bucket has ``min_samples`` observations, the stagger is ``initial``
    (conservative: a backup only after that long a silence); a failed attempt always starts
    the next one at once, free.

    A second account caps what hedging *costs* in output tokens, in every run and not on
    average: every winner pays in ``token_budget`` of its output tokens, every loser is
    charged what it may have produced (the tokens the client saw, or, for those it never
    saw, the fastest output rate seen times how long the loser took to stop, at most one
    answer), and a hedge starts only when the account covers
    the longest answer seen (the most a loser can cost), held until its race settles. So
    the losers' tokens stay under ``token_budget`` (5 %) of the winners' from the first
    race; the account starts empty, so there is no hedge before the first race is won.

    The defaults trade requests for the tail: hedging at the p80 sends a backup for about
    one race in five, so expect up to ``budget`` (30 %) more *requests*; with
    ``win="first_token"`` a backup that loses is mostly cancelled before its first token, so
    extra *tokens* stay small, and ``token_budget`` bounds them. On a heavy-tailed model (lognormal time to first token, median
    100 ms, p99 2 s) three attempts with these defaults cut the p99 by more than half (see
    ``docs/benchmarks/race.md``). Lower ``budget`` to cap the extra requests harder: the
    budget then refuses hedges and the tail grows back.

    Args:
        quantile: The quantile to hedge at, strictly between 0 and 1 (0.8: the slowest 20 %
            get a backup, as far as the budget allows).
        budget: Hedges per race, at most, in the long run (0.3: 30 % extra requests).
        min_samples: Observations per bucket before the learned quantile is trusted.
        initial: The stagger, in seconds, before that.
        max_tokens: The bucket's capacity: how many hedges a quiet period may save up.
        key: ``key(request) -> bucket``: what to learn separately (default: the request's
            ``model``; e.g. ``lambda r: (r["model"], len(r["input"]) > 2000)``).
        token_budget: The losers' output tokens, at most, as a fraction of the winners'
            (0.05: 5 % extra tokens, as estimated by the client: see above). 0 sends no
            hedge.

    Returns:
        An [`AdaptiveStagger`][tether.races.AdaptiveStagger].

    Raises:
        TypeError: A non-number, or a ``key`` that is not callable.
        ValueError: An argument out of range.

    Example:
        ```python
        HEDGE = tether.adaptive()

        async def ask(client, question):
            request = dict(model="gpt-5", input=question)
            result = await tether.race(client, [request] * 3, win="first_token",
                                       stagger=HEDGE)
            return result.winner.response
        ```

    Added in version 0.1.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)):
        raise TypeError(f"quantile must be a number, got {quantile!r}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be strictly between 0 and 1, got {quantile!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a number, got {budget!r}")
    if not 0 <= budget <= 1:
        raise ValueError(f"budget must be between 0 and 1, got {budget!r}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 5:
        raise ValueError(f"min_samples must be an int >= 5, got {min_samples!r}")
    initial = check_non_negative("initial", initial)
    if check_number("max_tokens", max_tokens, what="a number") < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
    if isinstance(token_budget, bool) or not isinstance(token_budget, (int, float)):
        raise TypeError(f"token_budget must be a number, got {token_budget!r}")
    if not 0 <= token_budget <= 1:
        raise ValueError(f"token_budget must be between 0 and 1, got {token_budget!r}")
    if not callable(key):
        raise TypeError(f"key must be a callable taking a request, got {key!r}")
    return AdaptiveStagger(
        quantile=float(quantile),
        budget=float(budget),
        min_samples=min_samples,
        initial=float(initial),
        max_tokens=float(max_tokens),
        key=key,
        token_budget=float(token_budget),
    )
