"""Races and hedges: several attempts at one answer, one winner, every loser cancelled on the server.

Every attempt is a [`guarded_stream`][tether.guarded_stream] opened in its own task, inside
its own ``CancelScope``, all in one task group. When one wins, every other live attempt is
marked lost (``ResponseGuard.mark_lost``) and its scope cancelled: each loser's own ``__aexit__``
runs the cancel protocol, so the losers are cancelled concurrently, each with its receipt,
and the race returns once all are confirmed or their grace ran out. Attempt tasks never
raise: failures are collected (``RaceFailed`` when nothing wins), a bug is re-raised as is
once the group is closed, and cancellation propagates unchanged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

import anyio
import attrs

from ._compat import check_async_client
from ._errors import AttemptRejected, RaceFailed, TetherError
from ._hedge import Adaptive, Signals, Trigger, launch_staggered
from ._outcome import Attempt, RaceResult
from ._scope import Scope
from ._stream import build_guard
from ._validate import check_positive

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskGroup
    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import AttemptState
    from ._protocol import ResponseGuard

__all__ = ["WinCondition", "first_completed", "first_token", "race"]


@final
@attrs.frozen
class WinCondition:
    """When an attempt wins a race: at its first token, or on completion if a predicate agrees.

    Use [`first_completed`][tether.first_completed] or [`first_token`][tether.first_token],
    or pass a ``Callable[[Response], bool]`` as ``win=``: it becomes
    ``WinCondition(name=fn.__name__, decide_at="completed", predicate=fn)``.

    Example:
        ```python
        long_enough = tether.WinCondition("long_enough", "completed",
                                          lambda r: len(r.output_text) > 200)
        result = await tether.race(client, requests, win=long_enough)
        ```
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


first_completed = WinCondition("first_completed", "completed")
"""The first attempt whose response completes wins (the default of ``race``)."""
first_token = WinCondition("first_token", "first_token")
"""The first attempt to produce an output token wins (the default of ``race_stream``)."""


_Win: TypeAlias = "WinCondition | Callable[[Response], bool]"
_Stagger: TypeAlias = "float | Adaptive | None"


@final
class _Slot:
    """The live state of one attempt (internal; ``Attempt`` is its frozen record)."""

    def __init__(self, index: int, stream: ResponseGuard, keep_events: bool) -> None:
        self.index = index
        self.stream = stream
        self.model: str | None = stream.model
        self.cancel_scope: anyio.CancelScope | None = None
        self.state: AttemptState = "pending"
        self.trigger: Trigger | None = None
        self.lost = False
        self.rejected = False
        self.events: deque[ResponseStreamEvent] | None = deque() if keep_events else None
        self.release: anyio.Event | None = None
        self.response: Response | None = None
        self.error: Exception | None = None
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.ended_at: float | None = None

    @property
    def deltas(self) -> int:
        """Output deltas received so far (roughly, tokens)."""
        return self.stream.deltas

    def record(self) -> Attempt:
        started = self.started_at
        return Attempt(
            index=self.index,
            model=self.model,
            state=self.state,
            trigger=self.trigger,
            response=self.response,
            outcome=self.stream.outcome,
            error=self.error,
            started_at=started,
            time_to_first_token=None
            if started is None or self.first_token_at is None
            else self.first_token_at - started,
            elapsed=None if started is None or self.ended_at is None else self.ended_at - started,
        )


def _prepare(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    win: _Win,
    stagger: _Stagger,
    grace: float | None,
    max_concurrency: int | None,
    *,
    keep_events: bool,
) -> _Race:
    """Check every argument and build every guarded stream: nothing is sent from here."""
    if isinstance(client_or_scope, Scope):
        if max_concurrency is not None:
            raise ValueError(
                "max_concurrency applies to a client; racing in a scope uses the scope's: "
                f"pass it to open_scope(), got max_concurrency={max_concurrency!r}"
            )
        scope = client_or_scope
    else:
        scope = Scope(
            check_async_client(client_or_scope, argument="client_or_scope"),
            max_concurrency=max_concurrency,
        )
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        raise TypeError(f"requests must be a sequence of dicts, got {requests!r}")
    if not requests:
        raise ValueError(f"requests must not be empty, got {requests!r}")
    if isinstance(win, WinCondition):
        condition = win
    elif callable(win):
        condition = WinCondition(getattr(win, "__name__", "predicate"), "completed", win)
    else:
        raise TypeError(f"win must be a WinCondition or a Callable[[Response], bool], got {win!r}")
    if stagger is not None and not isinstance(stagger, Adaptive):
        if isinstance(stagger, bool) or not isinstance(stagger, (int, float)):
            raise TypeError(
                f"stagger must be seconds, tether.adaptive(...) or None, got {stagger!r}"
            )
        if not math.isfinite(stagger) or stagger < 0:
            raise ValueError(f"stagger must be a finite number >= 0, got {stagger!r}")
        stagger = float(stagger)
    if grace is not None:
        grace = check_positive("grace", grace)
    slots: list[_Slot] = []
    for index, request in enumerate(requests):
        if not isinstance(request, Mapping):
            raise TypeError(f"requests[{index}] must be a dict of create kwargs, got {request!r}")
        kwargs: dict[str, Any] = dict(request)
        attempt_scope = scope
        if "client" in kwargs:
            own = check_async_client(kwargs.pop("client"), argument=f"requests[{index}]['client']")
            attempt_scope = Scope(
                own,
                grace=scope.grace,
                first_event_timeout=scope.first_event_timeout,
                confirm=scope.confirm,
            )
            attempt_scope.limiter = scope.limiter  # one bound for the whole race
        if grace is not None:
            kwargs.setdefault("grace", grace)
        try:
            stream = build_guard(attempt_scope, **kwargs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"requests[{index}]: {exc}") from None
        slots.append(_Slot(index, stream, keep_events))
    return _Race(slots, condition, stagger, handover=keep_events)


@final
class _Race:
    """The engine shared by ``race`` and ``race_stream`` (and the CLI's live view)."""

    def __init__(
        self, slots: list[_Slot], win: WinCondition, stagger: _Stagger, *, handover: bool
    ) -> None:
        self.slots = slots
        self.win = win
        self.stagger = stagger
        self.handover = handover  # race_stream: the winner's events go to the caller
        self.winner: _Slot | None = None
        self.crash: BaseException | None = None
        self.started_at = self.decided_at = self.ended_at = 0.0
        self._ended = 0

    def start(self, tg: TaskGroup) -> None:
        """Start the race in *tg*: the launcher, which starts the attempts."""
        self._tg = tg
        self.decision = anyio.Event()  # the winner is known, or nothing can win any more
        self.signals = Signals(len(self.slots))
        self._launcher = anyio.CancelScope()
        for slot in self.slots:
            slot.cancel_scope = anyio.CancelScope()
        self.started_at = anyio.current_time()
        if isinstance(self.stagger, Adaptive):
            self.stagger.throttle.on_primary()
        tg.start_soon(self._launch)

    async def _launch(self) -> None:
        with self._launcher:
            await launch_staggered(
                len(self.slots), self._start_attempt, self.signals, self._delay, self._allow_hedge
            )

    def _delay(self, index: int) -> float | None:
        if isinstance(self.stagger, Adaptive):
            return self.stagger.stagger_for(self.slots[index].model)
        return self.stagger

    def _allow_hedge(self) -> bool:
        return not isinstance(self.stagger, Adaptive) or self.stagger.throttle.try_spend()

    def _start_attempt(self, index: int, trigger: Trigger) -> None:
        slot = self.slots[index]
        slot.trigger = trigger
        slot.state = "queued"
        slot.started_at = anyio.current_time()
        self._tg.start_soon(self._attempt, slot, name=f"tether race attempt {index}")

    async def _attempt(self, slot: _Slot) -> None:
        assert slot.cancel_scope is not None
        if slot.lost or self.winner is not None or self.crash is not None:
            slot.state = "skipped"  # decided before this task ran: send nothing
            self._settle(slot)
            return
        try:
            with slot.cancel_scope:
                try:
                    async with slot.stream as stream:
                        await self._read(slot, stream)
                except Exception as exc:
                    slot.error = exc
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self._fail_hard(exc)  # not the attempt's failure: re-raised by the race
                return
            raise
        finally:
            self._settle(slot)

    async def _read(self, slot: _Slot, stream: ResponseGuard) -> None:
        events = slot.events
        at_token = self.win.decide_at == "first_token"
        async for event in stream:
            if events is not None:
                events.append(event)
            if slot.first_token_at is None and event.type.endswith(".delta"):
                self._first_token(slot)
                if at_token and self.winner is None:
                    if self.handover:  # the caller reads on from here, then lets us go
                        release = slot.release = anyio.Event()
                        self._decide(slot)
                        await release.wait()
                        return
                    self._decide(slot)
            if slot.lost:
                return  # a late winner: leave, and __aexit__ cancels it as a race loser
        slot.response = await stream.read_to_end()
        if self.winner is None:
            try:
                accepted = self.win.accepts(slot.response)
            except Exception as exc:  # the user's predicate: a bug, not an attempt failure
                self._fail_hard(exc)
                return
            if accepted:
                self._decide(slot)
            else:
                slot.rejected = True
                slot.error = AttemptRejected(slot.response, self.win.name)

    def _first_token(self, slot: _Slot) -> None:
        now = slot.first_token_at = anyio.current_time()
        slot.state = "streaming"
        self.signals.first_token(slot.index)
        if isinstance(self.stagger, Adaptive) and slot.started_at is not None:
            self.stagger.observe(slot.model, now - slot.started_at)

    def _decide(self, slot: _Slot) -> None:
        self.winner = slot
        self.decided_at = anyio.current_time()
        slot.state = "won"
        self._launcher.cancel()
        for other in self.slots:
            if other is not slot and other.state in ("queued", "streaming"):
                other.lost = True
                other.stream.mark_lost()
                if other.cancel_scope is not None:
                    other.cancel_scope.cancel()
        self.decision.set()

    def _fail_hard(self, exc: BaseException) -> None:
        if self.crash is None:
            self.crash = exc
        self._tg.cancel_scope.cancel()
        self.decision.set()

    def _settle(self, slot: _Slot) -> None:
        """Book-keeping once an attempt task is over, however it ended."""
        stream = slot.stream
        slot.ended_at = anyio.current_time()
        if slot.response is None and stream.final_response is not None:
            slot.response = stream.final_response
        if slot.state == "skipped" or (stream.outcome is None and slot.error is None):
            slot.state = "skipped"
        elif slot is self.winner:
            slot.state = "failed" if slot.error is not None else "won"
        elif slot.lost:
            slot.state = "lost"
            stagger = self.stagger
            started = slot.started_at
            if (
                isinstance(stagger, Adaptive)
                and slot.first_token_at is None
                and started is not None
            ):
                # Censored: it was still silent when cancelled. A lower bound beats no sample.
                stagger.observe(slot.model, max(self.decided_at - started, 0.0))
        elif slot.error is not None:
            slot.state = "rejected" if slot.rejected else "failed"
        else:
            slot.state = "cancelled"
        self.signals.ended(slot.index, failed=slot.state in ("failed", "rejected"))
        self._ended += 1
        if self._ended == len(self.slots):
            self.decision.set()

    def result(self) -> RaceResult:
        """The record of a decided race; ``RaceFailed`` if nothing won (or the winner failed)."""
        self.ended_at = anyio.current_time()
        for slot in self.slots:
            if slot.state == "pending":
                slot.state = "skipped"  # never started: the race was decided first
        attempts = tuple(slot.record() for slot in self.slots)
        winner = self.winner
        if winner is None or winner.state == "failed":
            raise self.failure(attempts)
        return RaceResult(
            winner=attempts[winner.index],
            losers=tuple(
                a for a in attempts if a.index != winner.index and a.state not in ("skipped",)
            ),
            attempts=attempts,
            win=self.win.name,
            started_at=self.started_at,
            decided_at=self.decided_at,
            ended_at=self.ended_at,
        )

    def failure(self, attempts: tuple[Attempt, ...]) -> RaceFailed:
        errors = [a.error for a in attempts if a.error is not None]
        outcomes = [a.outcome for a in attempts if a.outcome is not None]
        if self.winner is not None and self.winner.error is not None:
            message = f"attempt {self.winner.index} won the race, then failed"
        else:
            message = f"all {len(attempts)} attempts of the race failed"
        if not errors:  # pragma: no cover - every attempt that ends without winning has an error
            errors = [TetherError("no attempt won and none reported an error")]
        return RaceFailed(message, errors, outcomes)


async def race(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: _Win = first_completed,
    stagger: _Stagger = None,
    grace: float | None = None,
    max_concurrency: int | None = None,
) -> RaceResult:
    """Send several requests for one answer, keep the first that wins, cancel the rest on the server.

    Each request runs as a [`guarded_stream`][tether.guarded_stream] in its own task. When
    one wins, every other live attempt is closed and cancelled on the server, all of them
    concurrently, each with its own receipt; ``race`` returns once every loser is confirmed
    cancelled or its grace ran out. An attempt that completes after the decision is a loser
    too. An outer cancellation or deadline cancels every attempt on the server and propagates.

    Args:
        client_or_scope: An ``openai.AsyncOpenAI``, or a [`Scope`][tether.Scope] (its grace,
            first-event timeout and concurrency bound apply; its deadline bounds the race).
        requests: ``responses.create`` kwargs, one dict per attempt; each may also carry
            ``client=`` (race providers) and any [`guarded_stream`][tether.guarded_stream]
            option (``grace=``, ``first_token_timeout=``...).
        win: [`first_completed`][tether.first_completed] (default),
            [`first_token`][tether.first_token] (the winner is then read to completion), or
            a ``Callable[[Response], bool]``: a completed response it rejects is discarded
            and the race goes on.
        stagger: ``None``: start every attempt at once. Seconds: hedge, starting attempt
            *k + 1* only when attempt *k* failed or stayed silent (no token) that long; once
            some attempt streams, no more start unless it fails. Or an
            [`adaptive`][tether.adaptive] stagger.
        grace: Seconds each loser's server-side cancel may take (default: the scope's).
        max_concurrency: With a client: at most this many attempts in flight at once.
            With a scope, pass it to ``open_scope`` instead (a ValueError here).

    Returns:
        A [`RaceResult`][tether.RaceResult]; ``result.winner.response`` is the final response.

    Raises:
        RaceFailed: No attempt won: every error (``AttemptRejected`` for a rejected one) and
            every outcome. Also when a ``first_token`` winner fails after the decision.
        TypeError: A bad argument type (a sync client, a non-callable ``win``...).
        ValueError: An argument out of range (empty ``requests``, ``stagger < 0``...).
            Arguments are checked before any request is sent.

    Example:
        ```python
        result = await tether.race(client, [
            dict(model="gpt-5", input=question),
            dict(model="gpt-5-mini", input=question),
        ])
        print(result.winner.model, result.winner.response.output_text)
        ```

    Added in version 0.1.
    """
    engine = _prepare(
        client_or_scope, requests, win, stagger, grace, max_concurrency, keep_events=False
    )
    async with anyio.create_task_group() as tg:
        engine.start(tg)
    if engine.crash is not None:
        raise engine.crash
    return engine.result()
