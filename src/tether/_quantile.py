"""The P² streaming quantile estimator: one quantile of a stream of numbers, in constant memory.

Jain and Chlamtac, 1985: five markers (the minimum, the maximum, the target quantile and two
midpoints), each moved by a piecewise-parabolic step as an observation arrives. The adaptive
stagger (``_hedging.py``) keeps one per bucket to learn the time to first token.
"""

from __future__ import annotations

import math
from typing import final

__all__ = ["P2Quantile"]


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
