"""Hedging statistics: when to send a backup, learned online, within a budget.

A hedged request ("The Tail at Scale", Dean and Barroso, 2013) sends a backup only when the
first attempt is slower than usual, so the tail shrinks for some extra load. The race's
launcher (``_race_launch.py``) decides *when* the next attempt starts; this module learns the
stagger it waits for.

[`adaptive`][tether.adaptive] learns ``stagger`` online: a P² streaming quantile estimator
per bucket (by default, per model; Jain and Chlamtac, 1985: five markers, constant memory)
tracks the time to first token, and a token bucket caps the hedges at ``budget`` of the
traffic (gRPC's hedging throttle: every race adds ``budget`` tokens, every hedge spends one).
A second account, ``TokenBudget``, caps what the hedges *cost*:
the output tokens of the losers, charged as each race settles, at ``token_budget`` of the
winners' output tokens. The estimator is in ``_quantile.py``, the two accounts in
``_hedge_budgets.py``; this module holds the policy that joins them,
[`AdaptiveStagger`][tether.races.AdaptiveStagger], and the checks of ``adaptive()``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

from ._hedge_budgets import HedgeBudget, TokenBudget
from ._quantile import P2Quantile
from ._validate import check_non_negative, check_number

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["AdaptiveStagger", "Trigger", "adaptive"]

Bucket: TypeAlias = Hashable
"""What an adaptive stagger learns in: by default a request's model name."""

Trigger = Literal["primary", "parallel", "silence", "failure"]
"""Why an attempt was started.

- ``primary``: the first attempt of the race.
- ``parallel``: no stagger: every attempt starts at once.
- ``silence``: the previous attempt produced no token for ``stagger`` seconds (a hedge).
- ``failure``: the previous attempt failed (or was rejected) before that.
"""


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
        """The extra-request account, a token bucket (gRPC's hedging throttle), to read:
        ``throttle.hedges`` granted, ``throttle.refused``, ``throttle.primaries`` (races
        started) and ``throttle.tokens`` saved (each race adds ``budget``, each hedge spends 1)."""
        self.cost: TokenBudget = TokenBudget(token_budget)
        """The output-token account, to read: ``cost.won`` (the winners' output tokens),
        ``cost.spent`` (the losers'), ``cost.held`` (reserved for hedges in flight),
        ``cost.longest`` (the longest answer seen: one hedge's reservation) and
        ``cost.refused``; ``cost.spent + cost.held <= token_budget * cost.won`` at all times."""
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
    charged what it produced: the server's count when its stop's read-back has one
    (nothing for a loser stopped before its first output item, the usual hedge that lost),
    else what it may have produced (the tokens the client saw, or the fastest output rate
    seen times how long the loser took to stop, at most one answer). A hedge starts only
    when the account covers the longest answer seen (the most a loser can cost), held
    until its race settles. So the losers' tokens stay under ``token_budget`` (5 %) of the
    winners' from the first race; the account starts empty, so there is no hedge before the
    first race is won.

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
