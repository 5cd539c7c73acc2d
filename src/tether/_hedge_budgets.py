"""The two accounts a hedge must be granted by: extra requests and extra output tokens.

`HedgeBudget` (read as [`AdaptiveStagger.throttle`][tether.races.AdaptiveStagger.throttle])
is gRPC's hedging throttle, a token bucket that caps the hedges at a fraction of the races
(every race adds ``ratio`` tokens, every hedge spends one). `TokenBudget` (read as
[`AdaptiveStagger.cost`][tether.races.AdaptiveStagger.cost]) caps what the hedges *cost*:
the output tokens of the losers, charged as each race settles, at a fraction of the
winners' output tokens. Both are pure bookkeeping (no I/O, no clock); the adaptive stagger
(``_hedging.py``) asks them for every hedge. ``produced`` and ``reported`` read what a
race's attempt cost off its outcome.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._outcome import StreamOutcome

__all__ = ["HedgeBudget", "TokenBudget", "produced", "reported"]


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
    it produced when its race settles: the server's count where the stop's read-back
    reported one (``CancelReceipt.output_tokens``: ``0`` for a loser stopped before its
    first output item, the usual hedge that lost), else what it may have produced
    (``loser_cost``: the tokens seen, or those the server may have generated unseen while
    the loser was being stopped). A hedge is granted only when what is left covers a
    *reservation*: the longest answer seen so far, the most one loser can produce when
    answers are no longer than that. The reservation is held until the race
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


def produced(outcome: StreamOutcome | None) -> int:
    """The output tokens a stream produced: the server's count if it reported one, else the
    deltas received (a cancelled response reports no usage)."""
    if outcome is None:
        return 0
    usage = outcome.usage
    return outcome.deltas if usage is None else max(usage.output_tokens, outcome.deltas)


def reported(outcome: StreamOutcome | None) -> int | None:
    """What a loser cost by the server's own count: the output tokens its stop read back
    (``CancelReceipt.output_tokens``, with at least the deltas received), or ``None`` when
    the server did not say (``confirm=False``, no usage, no cancel sent)."""
    receipt = None if outcome is None else outcome.receipt
    if outcome is None or receipt is None or receipt.output_tokens is None:
        return None
    return max(receipt.output_tokens, outcome.deltas)
