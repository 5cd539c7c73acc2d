"""Simulated models: how fast they answer, what they say, and how they fail.

An [`EmulatedModel`][tether.testing.EmulatedModel] describes the timing and the text of one simulated
model; its [`Faults`][tether.testing.Faults] describe how the server misbehaves for it.
Both are frozen attrs records: replace a model in `ResponsesEmulator.models` to change
it at runtime.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, final

import attrs

from ._script import FunctionCall as FunctionCall
from ._script import Turn as Turn
from ._script import split_tokens as split_tokens

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

__all__ = ["EmulatedModel", "Faults", "FunctionCall", "Turn"]

_LOREM = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
]
_SPACED = tuple(" " + word for word in _LOREM)


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _optional_non_negative(
    _inst: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 or None, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@final
@attrs.frozen(kw_only=True)
class Faults:
    """How the emulated server misbehaves for one model.

    Every fault is deterministic: counters are kept per model (for create requests) or
    per response (for cancels and dropped connections), never drawn at random.

    Example:
        >>> Faults(fail_before_stream=(500, 429), cancel_failures=1)  # doctest: +ELLIPSIS
        Faults(...)
        >>> Faults(cancel_best_effort=20).cancel_best_effort_status  # cancel, 20 more tokens
        'completed'
    """

    created_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Seconds to wait before `response.created` is sent."""

    fail_before_stream: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    """The first `len(...)` create requests for this model answer these HTTP statuses
    (in the API's error shape) and create no response."""

    drop_after: int | None = None
    """Cut the first streaming connection of each response after this many events,
    without finishing the chunked body. A background response keeps generating."""

    cancel_failures: int = 0
    """The first `k` cancel calls for each response answer 500 and cancel nothing."""

    cancel_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Seconds each cancel call waits before it is processed."""

    cancel_hangs: bool = False
    """Cancel calls never answer: they are held until the client gives up."""

    error_event: Literal["flat", "nested"] | None = None
    """After `error_after` output tokens, emit an error event of this shape and end the
    response `failed`. `"flat"` is yielded by the SDK as `ResponseErrorEvent`; `"nested"`
    (`{"error": {...}}`) makes the SDK raise `APIError` mid-stream."""

    error_after: int = 0
    """Output tokens generated before the error event (with `error_event`)."""

    keepalive_every: float | None = None
    """Emit `{"type": "keepalive"}` events at this period, in seconds (overrides the
    emulator's `keepalive_every`)."""

    cancel_best_effort: int | None = attrs.field(default=None, validator=_optional_non_negative)
    """Best-effort cancel, as the live API's: a cancel answers 200 with status
    `cancelled` (and `usage: null`), yet the response goes on for this many more output
    tokens, whose events still reach its streams, then ends as `cancel_best_effort_status`
    says. The ledger keeps what really happened (`Ledger.Record.cancel_reported_status`,
    `status`, `tokens_after_cancel`). None: cancels stop the response at once."""

    cancel_best_effort_status: Literal["completed", "cancelled"] = "completed"
    """How a best-effort-cancelled response ends after its extra tokens: `"completed"`
    (with `response.completed`, its text cut where it stopped) or `"cancelled"` (the
    stream just ends, and retrieve answers `cancelled`)."""


def _turns(value: Iterable[Turn]) -> tuple[Turn, ...]:
    turns = tuple(value)
    for turn in turns:
        if not isinstance(turn, Turn):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"script must be a sequence of Turn records, got {turn!r}")
    return turns


@final
@attrs.frozen(kw_only=True)
class EmulatedModel:
    """A simulated model: time to first token, token rate, length and text.

    Attributes:
        ttft: Seconds from `response.in_progress` to the first output token.
        tokens_per_s: Output rate after the first token.
        length: Output tokens per response (ignored when `text` is given).
        text: The exact output; it is split into tokens on whitespace, each token
            keeping its leading spaces. Without it the output is lorem-style words drawn
            from the emulator's seeded RNG.
        latency: When set, the time to first token is drawn per response from this
            distribution (an [`EmulatedModel.Lognormal`][tether.testing.EmulatedModel.Lognormal])
            instead of `ttft`.
        faults: How the server misbehaves for this model.
        script: Scripted turns of a function-calling conversation (see `turn`).

    Example:
        >>> import random
        >>> fast = EmulatedModel(ttft=0.01, tokens_per_s=500.0, length=40)
        >>> weather = EmulatedModel(script=[
        ...     Turn(calls=[FunctionCall(name="get_weather", arguments={"city": "Paris"})]),
        ...     Turn(text="Sunny:", echo_outputs=True),
        ... ])
        >>> EmulatedModel(text="Hello world").tokens(random.Random(0))
        ['Hello', ' world']
    """

    @final
    @attrs.frozen(kw_only=True)
    class Lognormal:
        """A heavy-tailed delay distribution: `median * exp(sigma * N(0, 1))`.

        Real time-to-first-token is not constant: most requests are quick and a few are very
        slow. This is the tail that hedging (`tether.race(..., stagger=...)`) is for.

        Example:
            >>> EmulatedModel(latency=EmulatedModel.Lognormal(median=0.3))  # doctest: +ELLIPSIS
            EmulatedModel(...)
        """

        median: float = attrs.field(validator=_positive)
        """The median delay, in seconds."""

        sigma: float = attrs.field(default=0.5, validator=_non_negative)
        """The standard deviation of the underlying normal: 0 is constant, 1 is a long tail."""

        def sample(self, rng: random.Random) -> float:
            """Draw one delay, in seconds, from `rng`.

            Example:
                >>> import random
                >>> lognormal = EmulatedModel.Lognormal(median=1.0, sigma=0.0)
                >>> round(lognormal.sample(random.Random(0)), 3)
                1.0
            """
            return self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    ttft: float = attrs.field(default=0.05, validator=_non_negative)
    """Seconds to the first output token."""

    tokens_per_s: float = attrs.field(default=200.0, validator=_positive)
    """Output tokens per second."""

    length: int = attrs.field(default=50, validator=_non_negative)
    """Output tokens per response when `text` is not given."""

    text: str | None = None
    """The exact output text, or None for seeded lorem-style words."""

    latency: EmulatedModel.Lognormal | None = None
    """A per-response time-to-first-token distribution, or None for a constant `ttft`."""

    faults: Faults = Faults()
    """How the server misbehaves for this model."""

    script: tuple[Turn, ...] = attrs.field(default=(), converter=_turns)
    """Scripted turns: turn `k` answers a request `k` `previous_response_id` hops from the
    start of its conversation; the last turn repeats. Empty: plain text, every time."""

    def tokens(self, rng: random.Random) -> list[str]:
        """The output tokens of one response; they join into the full text.

        Example:
            >>> import random
            >>> "".join(EmulatedModel(length=3).tokens(random.Random(1))).count(" ")
            2
        """
        if self.text is not None:
            return split_tokens(self.text)
        # Uniform draws by rejection, one getrandbits call each (what random.choice does,
        # without its per-call overhead: an endless model's 100,000 words in ~30 ms).
        draw, n = rng.getrandbits, len(_SPACED)
        bits = n.bit_length()
        tokens: list[str] = []
        append = tokens.append
        for _ in range(self.length):
            r = draw(bits)
            while r >= n:
                r = draw(bits)
            append(_SPACED[r])
        if tokens:
            tokens[0] = tokens[0][1:]
        return tokens

    def turn(self, hops: int) -> Turn | None:
        """The scripted turn for a request `hops` `previous_response_id` hops into a chain.

        Returns None without a script; past its end, the last turn repeats (a one-turn
        script of calls is a model that always calls a tool).

        Example:
            >>> always = EmulatedModel(script=[Turn(calls=[FunctionCall(name="f")])])
            >>> always.turn(0) == always.turn(5)
            True
        """
        if not self.script:
            return None
        return self.script[min(max(hops, 0), len(self.script) - 1)]

    def first_token_delay(self, rng: random.Random) -> float:
        """The time to first token of one response: `ttft`, or a draw from `latency`.

        Example:
            >>> import random
            >>> EmulatedModel(ttft=0.2).first_token_delay(random.Random(0))
            0.2
        """
        if self.latency is None:
            return self.ttft
        return self.latency.sample(rng)

    @classmethod
    def defaults(cls) -> dict[str, EmulatedModel]:
        """Five named simulated models for demos and tests, from slow and long to fast.

        `gpt-5` has a heavy-tailed time to first token (the case for hedging); `o4-mini`
        thinks for a long time before it answers; `gpt-5-nano` is quick and short.

        Returns:
            A new dict: mutate it freely.

        Example:
            >>> sorted(EmulatedModel.defaults())
            ['gpt-5', 'gpt-5-mini', 'gpt-5-nano', 'gpt-5.4', 'o4-mini']
        """
        return {
            "gpt-5": cls(
                ttft=0.4,
                tokens_per_s=60.0,
                length=120,
                latency=cls.Lognormal(median=0.4, sigma=0.9),
            ),
            "gpt-5.4": cls(ttft=0.3, tokens_per_s=90.0, length=100),
            "gpt-5-mini": cls(
                ttft=0.15,
                tokens_per_s=150.0,
                length=80,
                latency=cls.Lognormal(median=0.15, sigma=0.4),
            ),
            "gpt-5-nano": cls(ttft=0.05, tokens_per_s=300.0, length=40),
            "o4-mini": cls(ttft=1.5, tokens_per_s=120.0, length=60),
        }
