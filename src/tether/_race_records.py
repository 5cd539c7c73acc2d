"""What a race reports: its win conditions, its records, and its progress events.

The records (``RaceAttempt``, ``RaceResult``) say how a race went once it is over; the
events (``RaceEvent.Started``, ``RaceEvent.AttemptStarted``, ``RaceEvent.AttemptEnded``, ``RaceEvent.Decided``,
``RaceEvent.Ended``) say it as it happens, through [`tether.observe`][tether.observe]. Events
form a tree: an attempt's ``parent`` is its race's ``id``, and the guarded stream an
attempt opens has the attempt's ``id`` as its parent (its ``StreamStarted`` carries the
live stream). Everything here is public in [`tether.races`][tether.races].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias, final

import attrs

from ._hedging import Trigger

if TYPE_CHECKING:
    from collections.abc import Callable

    from openai.types.responses import Response

    from ._outcome import CancelReceipt, StreamOutcome


@final
@attrs.frozen
class WinCondition:
    """When an attempt wins a race: at its first token, or on completion if a predicate agrees.

    The race's own form of what users pass as ``win=``: ``"first_completed"``,
    ``"first_token"``, or a ``Callable[[Response], bool]``, which becomes
    ``WinCondition(name=fn.__name__, decide_at="completed", predicate=fn)``. Records show
    its ``name`` (``RaceResult.win``).
    """

    name: str
    """How the rule is shown (``first_completed``, ``first_token``, a predicate's name)."""
    decide_at: Literal["first_token", "completed"]
    """The moment an attempt may win."""
    predicate: Callable[[Response], bool] | None = attrs.field(default=None, eq=False)
    """For ``completed``: a completed response wins only if this says so."""

    def accepts(self, response: Response) -> bool:
        """Whether *response*, completed, wins."""
        return self.predicate is None or bool(self.predicate(response))

    def __str__(self) -> str:
        return self.name


first_completed: WinCondition = WinCondition("first_completed", "completed")
"""The first attempt whose response completes wins (the default of ``race``)."""
first_token: WinCondition = WinCondition("first_token", "first_token")
"""The first attempt to produce an output token wins (the default of ``race_stream``)."""

Win: TypeAlias = "Literal['first_completed', 'first_token'] | Callable[[Response], bool]"
"""What ``win=`` accepts."""

AttemptState = Literal[
    "pending", "queued", "streaming", "won", "lost", "rejected", "failed", "cancelled", "skipped"
]
"""Where an attempt is; public as ``RaceAttempt.State``."""


@final
@attrs.frozen(kw_only=True)
class RaceAttempt:
    """One attempt of a race, as it ended.

    Example:
        ```python
        for attempt in result.attempts:
            print(attempt.index, attempt.model, attempt.state, attempt.receipt)
        ```
    """

    State = AttemptState
    """Where an attempt is (what [`state`][tether.races.RaceAttempt.state] says): annotate with
    ``tether.races.RaceAttempt.State``. ``pending`` (not started), ``queued`` (sent, no token yet), ``streaming``;
    then ``won``, ``lost`` (another attempt won: cancelled on the server, or finished too late),
    ``rejected`` (completed, but the win condition said no), ``failed``, ``cancelled`` (the race
    itself was cancelled), or ``skipped`` (never sent: the race was decided first)."""

    Trigger = Trigger
    """Why an attempt was started (what [`trigger`][tether.races.RaceAttempt.trigger] says):
    annotate with ``tether.races.RaceAttempt.Trigger``.

    - ``primary``: the first attempt of the race.
    - ``parallel``: no stagger: every attempt starts at once.
    - ``silence``: the previous attempt produced no token for ``stagger`` seconds (a hedge).
    - ``failure``: the previous attempt failed (or was rejected) before that.
    """

    index: int
    """Its position in the ``requests`` given to the race."""
    model: str | None
    """The model it asked for."""
    state: AttemptState
    """How it ended (see [`RaceAttempt.State`][tether.races.RaceAttempt.State])."""
    trigger: Trigger | None
    """Why it was started (``primary``, ``parallel``, ``silence``, ``failure``), ``None`` if never."""
    response: Response | None = attrs.field(default=None, eq=False)
    """Its final response, when it completed (the winner's, in ``race``)."""
    outcome: StreamOutcome | None = None
    """Its guarded stream's outcome; ``None`` if it never sent a request."""
    exception: Exception | None = attrs.field(default=None, eq=False, repr=False)
    """Why it failed (an ``AttemptRejected`` when the win predicate said no)."""
    started_at: float | None = None
    """When it started (``anyio.current_time()``)."""
    time_to_first_token: float | None = None
    """Seconds from its start to its first output token, if one came."""
    elapsed: float | None = None
    """Seconds from its start to the end of its cleanup."""

    @property
    def receipt(self) -> CancelReceipt | None:
        """The server-side cancel receipt, when the attempt had to be stopped."""
        return None if self.outcome is None else self.outcome.receipt

    @property
    def error(self) -> str | None:
        """``"ExceptionType: message"`` if it failed, as on every record (``exception`` has
        the object)."""
        return (
            None if self.exception is None else f"{type(self.exception).__name__}: {self.exception}"
        )


@final
@attrs.frozen(kw_only=True)
class RaceResult:
    """How a race went: the winner, every loser and its receipt, and when things happened.

    Times are on ``anyio.current_time()``'s clock. After the decision two things run at
    once: the losers' server-side cancels, and (``win="first_token"``) the winner being read
    to its end. ``losers_confirmed_at - decided_at`` is what cancelling the losers took;
    ``winner_ended_at - decided_at`` what finishing the winner took; ``ended_at`` is the
    later of the two.

    Example:
        ```python
        result = await tether.race(client, [a, b])
        print(result.winner.response.output_text)
        print(f"losers cancelled in {result.losers_confirmed_at - result.decided_at:.3f}s")
        ```
    """

    winner: RaceAttempt
    """The attempt that won."""
    losers: tuple[RaceAttempt, ...]
    """Every other attempt that was started (lost, rejected or failed), in request order."""
    attempts: tuple[RaceAttempt, ...]
    """All attempts, in request order (skipped ones included)."""
    win: str
    """The win condition's name."""
    started_at: float
    """When the race started."""
    decided_at: float
    """When the winner was decided."""
    losers_confirmed_at: float
    """When the last loser was over: its cancel confirmed, or its grace out (``decided_at``
    if there was no live loser)."""
    winner_ended_at: float
    """When the winner's stream was over (read to its end and closed)."""
    ended_at: float
    """When every attempt had ended: ``max(losers_confirmed_at, winner_ended_at)``, or a
    little later."""

    @property
    def hedges(self) -> int:
        """Attempts started because the previous one stayed silent for ``stagger``."""
        return sum(1 for a in self.attempts if a.trigger == "silence")


# ----------------------------------------------------------------- progress events


@final
class RaceEvent:
    """A race's progress events, one record per step, in this order.

    ``Started``; per attempt started, ``AttemptStarted`` (then its guarded stream's events, with
    ``parent`` = the attempt's id); ``Decided`` once something won; per attempt sent,
    ``AttemptEnded`` with its final [`RaceAttempt`][tether.races.RaceAttempt]; last ``Ended``.
    A namespace: the records are its attributes (``RaceEvent.Ended``); it is not their base class.

    Example:
        ```python
        from tether.races import RaceEvent

        def show(event: object) -> None:
            if isinstance(event, RaceEvent.AttemptEnded):
                print(event.attempt.index, event.attempt.state)
        ```
    """

    __slots__ = ()

    @final
    @attrs.frozen(kw_only=True)
    class Started:
        """A race (or ``race_stream``) starts, before its first request.

        Example:
            ```python
            if isinstance(event, RaceEvent.Started):
                print(f"race {event.id}: {len(event.models)} attempts, win={event.win}")
            ```
        """

        id: int
        """This race's id in events."""
        parent: int | None
        """What it runs under (an agent turn...), if anything."""
        win: str
        """The win condition's name."""
        models: tuple[str | None, ...]
        """The model of each request, in request order (``len(models)`` attempts at most)."""
        stagger: float | None
        """The fixed stagger in seconds; ``None`` with no stagger or an adaptive one."""

    @final
    @attrs.frozen(kw_only=True)
    class AttemptStarted:
        """An attempt is about to send its request (it may first wait for a concurrency slot).

        Example:
            ```python
            if isinstance(event, RaceEvent.AttemptStarted) and event.trigger == "silence":
                print("hedged: attempt", event.index)
            ```
        """

        id: int
        """This attempt's id in events: the parent of its guarded stream's events."""
        parent: int
        """Its race's id."""
        index: int
        """Its position in the race's ``requests``."""
        model: str | None
        """The model it asks for."""
        trigger: Trigger
        """Why it started: ``primary``, ``parallel``, ``silence`` (a hedge), ``failure``."""
        at: float
        """When (``anyio.current_time()``)."""

    @final
    @attrs.frozen(kw_only=True)
    class AttemptEnded:
        """An attempt is over: its record says how (``won``, ``lost`` with its receipt...).

        Example:
            ```python
            if isinstance(event, RaceEvent.AttemptEnded) and event.attempt.receipt:
                print(event.attempt.index, event.attempt.receipt.status)
            ```
        """

        id: int
        """The attempt's id in events."""
        parent: int
        """Its race's id."""
        attempt: RaceAttempt
        """Its final record (state, trigger, outcome and receipt, times)."""

    @final
    @attrs.frozen(kw_only=True)
    class Decided:
        """The race has its winner; the losers are being cancelled from now on.

        Example:
            ```python
            if isinstance(event, RaceEvent.Decided):
                print("winner:", event.winner)
            ```
        """

        id: int
        """The race's id."""
        winner: int
        """The winner's index in ``requests``."""
        winner_id: int
        """The winner's attempt id in events."""
        at: float
        """When (``anyio.current_time()``)."""

    @final
    @attrs.frozen(kw_only=True)
    class Ended:
        """The race is over: every attempt has ended. ``result`` or ``exception`` is set, not both.

        Example:
            ```python
            if isinstance(event, RaceEvent.Ended) and event.result is not None:
                print(event.result.winner.index, event.result.ended_at)
            ```
        """

        id: int
        """The race's id."""
        result: RaceResult | None
        """How it went, when something won."""
        exception: BaseException | None = attrs.field(default=None, eq=False)
        """Why nothing won (``RaceFailed``), or what ended it (a cancellation, a crash)."""
