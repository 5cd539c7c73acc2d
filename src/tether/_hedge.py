"""Hedging: when a race starts its next attempt, and how to learn that moment (adaptive stagger).

A hedged request ("The Tail at Scale", Dean and Barroso, 2013) sends a backup only when the
first attempt is slower than usual, so the tail shrinks for a few percent of extra load. The
launcher here has the shape of trio's happy eyeballs (``_highlevel_open_tcp_stream.py``):
start attempt *k*, wait until it fails or has been silent for ``stagger`` seconds, then start
attempt *k + 1*.

[`adaptive`][tether.adaptive] learns ``stagger`` online: a P² streaming quantile estimator
per model (Jain and Chlamtac, 1985: five markers, constant memory) tracks the time to first
token, and a token bucket caps the hedges at ``budget`` of the traffic (gRPC's hedging
throttle: every race adds ``budget`` tokens, every hedge spends one).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Adaptive", "HedgeBudget", "P2Quantile", "Signals", "Trigger", "adaptive"]

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
        self.tokens = 0.0
        self.primaries = 0
        self.hedges = 0
        self.refused = 0

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


@final
class Adaptive:
    """A stagger learned online: hedge at a quantile of each model's time to first token.

    Made by [`adaptive`][tether.adaptive]; pass it as ``stagger=`` to
    [`race`][tether.race] or [`race_stream`][tether.race_stream]. Keep one object for many
    races (at module level): it learns from all of them. It is not thread-safe, but safe
    across concurrent races on one event loop (every method is synchronous).

    Example:
        ```python
        HEDGE = tether.adaptive(quantile=0.9, budget=0.05)
        result = await tether.race(client, [req, req], win=tether.first_token, stagger=HEDGE)
        print(HEDGE.stagger_for("gpt-5"), HEDGE.throttle.hedges)
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
    ) -> None:
        self.quantile = quantile
        """The quantile of the time to first token at which a hedge starts."""
        self.min_samples = min_samples
        """Observations of a model before its learned quantile is used."""
        self.initial = initial
        """The stagger, in seconds, while a model has fewer than ``min_samples`` observations."""
        self.throttle = HedgeBudget(budget, max_tokens)
        """The token bucket: ``throttle.hedges``, ``throttle.primaries``, ``throttle.tokens``."""
        self._sketches: dict[str, P2Quantile] = {}

    def stagger_for(self, model: str | None) -> float:
        """Seconds of silence after which a backup of *model* starts.

        Returns:
            The learned quantile once ``min_samples`` observations arrived, else ``initial``.
        """
        sketch = self._sketches.get(model or "")
        if sketch is None or sketch.count < self.min_samples:
            return self.initial
        return max(sketch.value, 0.0)

    def observe(self, model: str | None, seconds: float) -> None:
        """Record one time to first token of *model* (races call this; so may you)."""
        key = model or ""
        sketch = self._sketches.get(key)
        if sketch is None:
            sketch = self._sketches[key] = P2Quantile(self.quantile)
        sketch.add(seconds)

    def samples(self, model: str | None) -> int:
        """How many times to first token of *model* were observed."""
        sketch = self._sketches.get(model or "")
        return 0 if sketch is None else sketch.count

    def __repr__(self) -> str:
        models = ", ".join(f"{m or '?'}: {self.stagger_for(m):.3f}s" for m in self._sketches)
        return (
            f"<Adaptive p{self.quantile * 100:g} budget={self.throttle.ratio:g} "
            f"hedges={self.throttle.hedges}/{self.throttle.primaries} [{models}]>"
        )


def adaptive(
    quantile: float = 0.9,
    budget: float = 0.05,
    *,
    min_samples: int = 20,
    initial: float = 2.0,
    max_tokens: float = 10.0,
) -> Adaptive:
    """Hedge at a learned quantile of the time to first token, within a budget of extra requests.

    Pass the result as ``stagger=`` and keep it across races. For each model it learns the
    time from request to first token (P² streaming quantile, constant memory; an attempt
    cancelled before its first token counts with the time it had waited, a lower bound) and
    starts a backup once the current attempt has been silent that long. A token bucket caps
    the backups: each race adds ``budget`` tokens (at most ``max_tokens`` saved), each
    hedge spends one, so hedges never exceed ``budget`` of the races. Until a model has
    ``min_samples`` observations, the stagger is ``initial`` (conservative: a backup only
    after that long a silence); a failed attempt always starts the next one at once, free.

    Args:
        quantile: The quantile to hedge at, strictly between 0 and 1 (0.9: the slowest 10 %
            get a backup, as far as the budget allows).
        budget: Hedges per race, at most, in the long run (0.05: 5 % extra requests).
        min_samples: Observations per model before the learned quantile is trusted.
        initial: The stagger, in seconds, before that.
        max_tokens: The bucket's capacity: how many hedges a quiet period may save up.

    Returns:
        An [`Adaptive`][tether.Adaptive] stagger.

    Raises:
        ValueError: An argument out of range.

    Example:
        ```python
        HEDGE = tether.adaptive(quantile=0.95, budget=0.05)

        async def ask(client, question):
            request = dict(model="gpt-5", input=question)
            result = await tether.race(client, [request, request], win=tether.first_token,
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
    if not isinstance(initial, (int, float)) or not math.isfinite(initial) or initial < 0:
        raise ValueError(f"initial must be a finite number >= 0, got {initial!r}")
    if not isinstance(max_tokens, (int, float)) or not max_tokens >= 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
    return Adaptive(
        quantile=float(quantile),
        budget=float(budget),
        min_samples=min_samples,
        initial=float(initial),
        max_tokens=float(max_tokens),
    )


@final
class Signals:
    """What the launcher of a race watches: which attempts failed, which are streaming.

    The race sets them from its attempt tasks; ``changed`` wakes the launcher on every
    update (an Event replaced on each notification, so no wake-up is missed).
    """

    def __init__(self, count: int) -> None:
        self.failed = [False] * count
        self.streaming: set[int] = set()
        self._changed = anyio.Event()

    def first_token(self, index: int) -> None:
        self.streaming.add(index)
        self._notify()

    def ended(self, index: int, *, failed: bool) -> None:
        self.streaming.discard(index)
        self.failed[index] = self.failed[index] or failed
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def changed(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return on the next update, or after *timeout* seconds."""
        event = self._changed
        with anyio.move_on_after(timeout):
            await event.wait()


async def launch_staggered(
    count: int,
    start: Callable[[int, Trigger], None],
    signals: Signals,
    delay: Callable[[int], float | None],
    allow_hedge: Callable[[], bool],
) -> None:
    """Start attempts ``0..count-1`` in order, each when the previous one failed or stayed silent.

    ``start(k, trigger)`` must start attempt *k* without blocking (``tg.start_soon``).
    ``delay(k)`` is the stagger after attempt *k* (``None``: start the next one at once).
    Attempt *k + 1* starts when attempt *k* has failed (``trigger="failure"``), or when
    ``delay(k)`` seconds have passed since *k* started and no attempt is streaming
    (``"silence"``, only if ``allow_hedge()`` grants it; when it refuses, it is asked again
    after each further ``delay(k)`` of silence). While some attempt is streaming no hedge
    starts: the classic hedge backs up a silent request, not a slow one, and waits for a
    failure instead.
    Cancel the enclosing scope to stop launching (the race was decided).
    """
    trigger: Trigger = "primary"
    for k in range(count):
        start(k, trigger)
        if k == count - 1:
            return
        wait = delay(k)
        if wait is None:
            trigger = "parallel"
            continue
        deadline = anyio.current_time() + wait
        while True:
            if signals.failed[k]:
                trigger = "failure"
                break
            now = anyio.current_time()
            if not signals.streaming and now >= deadline:
                if allow_hedge():
                    trigger = "silence"
                    break
                # Out of budget: ask again after another stagger (tokens come with other
                # races), so what budget there is goes to the attempts that stay silent longest.
                deadline = now + wait if wait > 0 else math.inf
            await signals.changed(math.inf if signals.streaming else deadline - now)
