"""Races and hedges: several attempts at one answer, one winner, every loser cancelled on the server.

The race is one staggered loop, trio's happy eyeballs (``_highlevel_open_tcp_stream.py``):
in one task group, start attempt *k*, then wait until it fails, or until it has been silent
for ``stagger`` seconds, before starting attempt *k + 1*. Each attempt is a guarded stream
opened in its own task, inside its own ``CancelScope``. The first attempt to win marks every
other live attempt lost (``ResponseGuard.mark_lost``) and cancels its scope: each loser then
runs its guard's own stop path (close, then cancel on the server within grace), all of them
concurrently, and the race returns once all are over. Attempt tasks never raise: failures
are collected (``RaceFailed`` when nothing wins), a bug is re-raised as is once the group
is closed, and cancellation propagates unchanged.

Concurrency slots (``max_concurrency``) are taken in request order on both backends: the
launcher starts attempt *k + 1* only once attempt *k* is in line for its slot (its task
calls ``task_status.started()`` right before ``ResponseGuard.open``, which joins the
limiter's FIFO queue before its first checkpoint). Without slots to queue for, attempts
started together are started at once: ``tg.start`` waits two scheduler passes for each,
and with a hundred streams live a pass is long (101 parallel attempts took 2.2-2.7 s to
start on trio, ``benchmarks/bench_race.py``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, final

import anyio

from . import observe
from ._compat import check_async_client
from ._errors import AttemptRejected, RaceFailed, TetherError
from ._hedging import AdaptiveStagger
from ._race_records import (
    AttemptEnded,
    AttemptStarted,
    RaceAttempt,
    RaceDecided,
    RaceEnded,
    RaceResult,
    RaceStarted,
    Win,
    WinCondition,
    first_completed,
    first_token,
)
from ._scope import Scope
from ._stream import build_guard
from ._validate import check_non_negative, check_positive

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup, TaskStatus
    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._hedging import Bucket, Trigger
    from ._protocol import ResponseGuard
    from ._race_records import AttemptState

__all__ = ["Contestant", "Progress", "Race", "Stagger", "launch_staggered", "prepare_race", "race"]

Stagger: TypeAlias = "float | AdaptiveStagger | None"
"""What ``stagger=`` accepts."""


# ---------------------------------------------------------------- the staggered loop


@final
class Progress:
    """What the launcher watches: which attempts failed, which are streaming.

    The attempt tasks report to it; ``changed`` wakes the launcher on every report (an Event
    replaced on each one, so no wake-up is missed).
    """

    def __init__(self, count: int) -> None:
        self.failed: list[anyio.Event] = [anyio.Event() for _ in range(count)]
        """Per attempt: set once it failed (or was rejected)."""
        self.streaming: set[int] = set()
        """The attempts producing tokens right now."""
        self._changed = anyio.Event()

    def first_token(self, index: int) -> None:
        self.streaming.add(index)
        self._notify()

    def ended(self, index: int, *, failed: bool) -> None:
        self.streaming.discard(index)
        if failed:
            self.failed[index].set()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def changed(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return on the next report, or after *timeout* seconds."""
        event = self._changed
        with anyio.move_on_after(timeout):
            await event.wait()


async def launch_staggered(
    count: int,
    start: Callable[[int, Trigger], Awaitable[object]],
    progress: Progress,
    stagger_after: Callable[[int], float | None],
    may_hedge: Callable[[], bool],
) -> None:
    """Start attempts ``0..count-1`` in order, each when the previous one failed or stayed silent.

    ``await start(k, trigger)`` starts attempt *k* and, when there are concurrency slots,
    returns once it is in line for one: the attempts queue in request order. ``stagger_after(k)`` is the
    stagger after attempt *k* (``None``: start the next one at once, ``parallel``).
    Attempt *k + 1* starts when *k* has failed (``failure``), or when ``stagger_after(k)``
    seconds have passed since *k* started and no attempt is streaming (``silence``, if
    ``may_hedge()`` grants it; when it refuses, it is asked again after each further stagger
    of silence: tokens come with other races). While some attempt streams no hedge starts:
    a hedge backs up a silent request, not a slow one, and waits for a failure instead.
    Cancel the enclosing scope to stop launching (the race was decided).
    """
    trigger: Trigger = "primary"
    for k in range(count):
        await start(k, trigger)
        if k == count - 1:
            return
        stagger = stagger_after(k)
        if stagger is None:
            trigger = "parallel"
            continue
        deadline = anyio.current_time() + stagger
        while True:
            if progress.failed[k].is_set():
                trigger = "failure"
                break
            now = anyio.current_time()
            if not progress.streaming and now >= deadline:
                if may_hedge():
                    trigger = "silence"
                    break
                deadline = now + stagger if stagger > 0 else math.inf
            await progress.changed(math.inf if progress.streaming else deadline - now)


# ------------------------------------------------------------------------ the race


@final
class Contestant:
    """One attempt's live state (internal; ``RaceAttempt`` is its frozen record)."""

    def __init__(self, index: int, guard: ResponseGuard, bucket: Bucket, keep: bool) -> None:
        self.index = index
        self.guard = guard
        self.bucket = bucket
        self.model: str | None = guard.model
        self.node: int = observe.new_id()
        """Its id in progress events."""
        self.cancel_scope: anyio.CancelScope = anyio.CancelScope()
        self.state: AttemptState = "pending"
        self.trigger: Trigger | None = None
        self.lost = False
        self.rejected = False
        self.events: deque[ResponseStreamEvent] | None = deque() if keep else None
        """``race_stream``: what it produced before winning, to replay to the caller."""
        self.release: anyio.Event | None = None
        """``race_stream`` with ``first_token``: set once the caller is done with the winner."""
        self.response: Response | None = None
        self.error: Exception | None = None
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.ended_at: float | None = None

    def record(self) -> RaceAttempt:
        started = self.started_at
        return RaceAttempt(
            index=self.index,
            model=self.model,
            state=self.state,
            trigger=self.trigger,
            response=self.response,
            outcome=self.guard.outcome,
            error=self.error,
            started_at=started,
            time_to_first_token=None
            if started is None or self.first_token_at is None
            else self.first_token_at - started,
            elapsed=None if started is None or self.ended_at is None else self.ended_at - started,
        )


def _output_tokens(contestant: Contestant) -> int:
    """The output tokens *contestant* produced: the server's count if it reported one, else
    the deltas received (a cancelled response reports no usage)."""
    outcome = contestant.guard.outcome
    if outcome is None:
        return 0
    usage = outcome.usage
    return outcome.deltas if usage is None else max(usage.output_tokens, outcome.deltas)


def _win_condition(win: Win) -> WinCondition:
    if isinstance(win, WinCondition):
        return win
    if win == "first_completed":
        return first_completed
    if win == "first_token":
        return first_token
    if isinstance(win, str):
        raise ValueError(f"win must be 'first_completed' or 'first_token', got {win!r}")
    if callable(win):
        return WinCondition(getattr(win, "__name__", "predicate"), "completed", win)
    raise TypeError(
        "win must be 'first_completed', 'first_token', a WinCondition or a "
        f"Callable[[Response], bool], got {win!r}"
    )


def _check_stagger(stagger: Stagger) -> Stagger:
    if stagger is None or isinstance(stagger, AdaptiveStagger):
        return stagger
    return check_non_negative("stagger", stagger, what="seconds, tether.adaptive(...) or None")


def prepare_race(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    win: Win,
    stagger: Stagger,
    grace: float | None,
    max_concurrency: int | None,
    *,
    handover: bool,
) -> Race:
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
    condition = _win_condition(win)
    stagger = _check_stagger(stagger)
    if grace is not None:
        grace = check_positive("grace", grace)
    contestants: list[Contestant] = []
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
                journal=scope.journal,  # journaled like the others: `tether reap` sees it
            )
            attempt_scope.limiter = scope.limiter  # one bound for the whole race
        bucket = stagger.bucket(kwargs) if isinstance(stagger, AdaptiveStagger) else None
        if grace is not None:
            kwargs.setdefault("grace", grace)
        try:
            guard = build_guard(attempt_scope, **kwargs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"requests[{index}]: {exc}") from None
        contestants.append(Contestant(index, guard, bucket, keep=handover))
    return Race(
        contestants, condition, stagger, handover=handover, ordered=scope.limiter is not None
    )


@final
class Race:
    """The engine shared by ``race`` and ``race_stream`` (internal)."""

    def __init__(
        self,
        contestants: list[Contestant],
        win: WinCondition,
        stagger: Stagger,
        *,
        handover: bool,
        ordered: bool,
    ) -> None:
        self.contestants = contestants
        self.ordered = ordered  # attempts queue for concurrency slots: start them in turn
        self.win = win
        self.stagger = stagger
        self.handover = handover  # race_stream: the winner's events go to the caller
        self.node: int = observe.new_id()
        """Its id in progress events."""
        self.winner: Contestant | None = None
        self.crash: BaseException | None = None
        self.started_at: float = 0.0
        self.decided_at: float = 0.0
        self._ended = 0
        self._held = 0.0  # output tokens the hedges of this race hold in an adaptive's account
        self._settled = False

    def start(self, tg: TaskGroup) -> None:
        """Start the race in *tg*: the launcher, which starts the attempts in turn."""
        self.decision: anyio.Event = (
            anyio.Event()
        )  # the winner is known, or nothing can win any more
        self.progress: Progress = Progress(len(self.contestants))
        self._launcher = anyio.CancelScope()
        self._group = tg.cancel_scope
        self.started_at = anyio.current_time()
        if isinstance(self.stagger, AdaptiveStagger):
            self.stagger.throttle.on_primary()
        if observe.watched():
            observe.emit(
                RaceStarted(
                    id=self.node,
                    parent=observe.current_parent(),
                    win=self.win.name,
                    models=tuple(c.model for c in self.contestants),
                    stagger=self.stagger if isinstance(self.stagger, float) else None,
                )
            )
        tg.start_soon(self._launch, tg, name="tether race launcher")

    async def _launch(self, tg: TaskGroup) -> None:
        async def start(index: int, trigger: Trigger) -> None:
            contestant = self.contestants[index]
            name = f"tether attempt {index}"
            if self.ordered:
                await tg.start(self._attempt, contestant, trigger, name=name)
            else:  # no slots to queue for: no need to wait for each one's turn (see above)
                tg.start_soon(self._attempt, contestant, trigger, name=name)

        with self._launcher:
            await launch_staggered(
                len(self.contestants), start, self.progress, self._stagger_after, self._may_hedge
            )

    def _stagger_after(self, index: int) -> float | None:
        if isinstance(self.stagger, AdaptiveStagger):
            return self.stagger.stagger_for(self.contestants[index].bucket)
        return self.stagger

    def _may_hedge(self) -> bool:
        if not isinstance(self.stagger, AdaptiveStagger):
            return True
        held = self.stagger.try_hedge()
        if held is None:
            return False
        self._held += held
        return True

    def _settle_budget(self) -> None:
        """Pay the winner's output tokens into an adaptive's account, charge the losers'."""
        if self._settled or not isinstance(self.stagger, AdaptiveStagger):
            return
        self._settled = True
        winner = self.winner
        won = None if winner is None or winner.state != "won" else _output_tokens(winner)
        losers = [_output_tokens(c) for c in self.contestants if c.lost]
        self.stagger.settle(self._held, won, losers)

    async def _attempt(
        self,
        contestant: Contestant,
        trigger: Trigger,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        contestant.trigger = trigger
        contestant.started_at = anyio.current_time()
        if self.winner is not None or self.crash is not None:
            contestant.state = "skipped"  # decided before this task ran: send nothing
            task_status.started()
            self._settle(contestant)
            return
        contestant.state = "queued"
        if observe.watched():
            observe.emit(
                AttemptStarted(
                    id=contestant.node,
                    parent=self.node,
                    index=contestant.index,
                    model=contestant.model,
                    trigger=trigger,
                    at=contestant.started_at,
                )
            )
        # No checkpoint from here to the guard joining the limiter's queue: slots in order.
        task_status.started()
        try:
            with contestant.cancel_scope, observe.parent(contestant.node):
                try:
                    async with contestant.guard as guard:
                        await self._read(contestant, guard)
                except Exception as exc:
                    contestant.error = exc
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self._fail_hard(exc)  # not the attempt's failure: re-raised by the race
                return
            raise
        finally:
            self._settle(contestant)

    async def _read(self, contestant: Contestant, guard: ResponseGuard) -> None:
        events = contestant.events
        at_token = self.win.decide_at == "first_token"
        async for event in guard:
            if events is not None:
                events.append(event)
            if contestant.first_token_at is None and event.type.endswith(".delta"):
                self._first_token(contestant)
                if at_token and self.winner is None:
                    if self.handover:  # the caller reads on from here, then lets us go
                        release = contestant.release = anyio.Event()
                        self._decide(contestant)
                        await release.wait()
                        return
                    self._decide(contestant)
            if contestant.lost:
                return  # a late winner: leave, and the guard cancels it as a race loser
        contestant.response = await guard.read_to_end()
        if self.winner is None:
            try:
                accepted = self.win.accepts(contestant.response)
            except Exception as exc:  # the user's predicate: a bug, not an attempt failure
                self._fail_hard(exc)
                return
            if accepted:
                self._decide(contestant)
            else:
                contestant.rejected = True
                contestant.error = AttemptRejected(contestant.response, self.win.name)

    def _first_token(self, contestant: Contestant) -> None:
        now = contestant.first_token_at = anyio.current_time()
        contestant.state = "streaming"
        self.progress.first_token(contestant.index)
        if isinstance(self.stagger, AdaptiveStagger) and contestant.started_at is not None:
            self.stagger.observe(contestant.bucket, now - contestant.started_at)

    def _decide(self, winner: Contestant) -> None:
        """*winner* won: stop launching, and cancel every other live attempt, with a reason."""
        self.winner = winner
        self.decided_at = anyio.current_time()
        winner.state = "won"
        self._launcher.cancel()
        for other in self.contestants:
            if other is not winner and other.state in ("queued", "streaming"):
                other.lost = True
                other.guard.mark_lost()
                other.cancel_scope.cancel()
        if observe.watched():
            observe.emit(
                RaceDecided(
                    id=self.node, winner=winner.index, winner_id=winner.node, at=self.decided_at
                )
            )
        self.decision.set()

    def _fail_hard(self, exc: BaseException) -> None:
        if self.crash is None:
            self.crash = exc
        self._group.cancel()  # every attempt stops (on the server too); the race raises it
        self.decision.set()

    def _settle(self, contestant: Contestant) -> None:
        """Book-keeping once an attempt task is over, however it ended."""
        guard = contestant.guard
        contestant.ended_at = anyio.current_time()
        if contestant.response is None and guard.final_response is not None:
            contestant.response = guard.final_response
        never_sent = guard.outcome is None or (
            not guard.request_sent and guard.outcome.response_id is None
        )
        if contestant.state == "skipped" or (never_sent and contestant.error is None):
            contestant.state = "skipped"  # e.g. still queued for a slot when the race was decided
        elif contestant is self.winner:
            contestant.state = "failed" if contestant.error is not None else "won"
        elif contestant.lost:
            contestant.state = "lost"
            started = contestant.started_at
            if (
                isinstance(self.stagger, AdaptiveStagger)
                and contestant.first_token_at is None
                and started is not None
            ):
                # Censored: it was still silent when cancelled. A lower bound beats no sample.
                self.stagger.observe(contestant.bucket, max(self.decided_at - started, 0.0))
        elif contestant.error is not None:
            contestant.state = "rejected" if contestant.rejected else "failed"
        else:
            contestant.state = "cancelled"
        self.progress.ended(contestant.index, failed=contestant.state in ("failed", "rejected"))
        if observe.watched() and contestant.state != "skipped":
            observe.emit(
                AttemptEnded(id=contestant.node, parent=self.node, attempt=contestant.record())
            )
        self._ended += 1
        if self._ended == len(self.contestants):
            self.decision.set()

    def result(self) -> RaceResult:
        """The record of the race, once its group is closed; raises what ended it otherwise.

        Raises:
            RaceFailed: Nothing won (or the ``first_token`` winner failed afterwards).
        """
        if self.crash is not None:
            raise self.crash
        ended_at = anyio.current_time()
        for contestant in self.contestants:
            if contestant.state == "pending":
                contestant.state = "skipped"  # never started: the race was decided first
        attempts = tuple(c.record() for c in self.contestants)
        winner = self.winner
        if winner is None or winner.state == "failed":
            raise self._failure(attempts)
        live_losers = [c.ended_at for c in self.contestants if c.lost and c.ended_at is not None]
        return RaceResult(
            winner=attempts[winner.index],
            losers=tuple(a for a in attempts if a.index != winner.index and a.state != "skipped"),
            attempts=attempts,
            win=self.win.name,
            started_at=self.started_at,
            decided_at=self.decided_at,
            losers_confirmed_at=max(live_losers, default=self.decided_at),
            winner_ended_at=winner.ended_at if winner.ended_at is not None else ended_at,
            ended_at=ended_at,
        )

    def _failure(self, attempts: tuple[RaceAttempt, ...]) -> RaceFailed:
        errors = [a.error for a in attempts if a.error is not None]
        outcomes = [a.outcome for a in attempts if a.outcome is not None]
        if self.winner is not None and self.winner.error is not None:
            message = f"attempt {self.winner.index} won the race, then failed"
        else:
            message = f"all {len(attempts)} attempts of the race failed"
        if not errors:  # pragma: no cover - every attempt that ends without winning has an error
            errors = [TetherError("no attempt won and none reported an error")]
        return RaceFailed(message, errors, outcomes)

    def ended(self, result: RaceResult | None, error: BaseException | None) -> None:
        """Settle an adaptive stagger's budget, and tell observers the race is over (``RaceEnded``)."""
        self._settle_budget()
        if observe.watched():
            observe.emit(RaceEnded(id=self.node, result=result, error=error))


async def race(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: Win = first_completed,
    stagger: Stagger = None,
    grace: float | None = None,
    max_concurrency: int | None = None,
) -> RaceResult:
    """Send several requests for one answer, keep the first that wins, cancel the rest on the server.

    Each request runs as a [`guarded_stream`][tether.guarded_stream] in its own task. When
    one wins, every other live attempt is closed and cancelled on the server, all of them
    concurrently, each with its own receipt; ``race`` returns once every loser is confirmed
    cancelled or its grace ran out. An attempt that completes after the decision is a loser
    too. An outer cancellation or deadline cancels every attempt on the server and propagates.
    Progress events ([`tether.races`][tether.races]: ``RaceStarted``, ``AttemptStarted``...)
    go to [`tether.observe`][tether.observe] observers.

    Args:
        client_or_scope: An ``openai.AsyncOpenAI``, or a [`Scope`][tether.Scope] (its grace,
            first-event timeout, concurrency bound and journal apply; its deadline bounds
            the race).
        requests: ``responses.create`` kwargs, one dict per attempt; each may also carry
            ``client=`` (race providers) and any [`guarded_stream`][tether.guarded_stream]
            option (``grace=``, ``first_token_timeout=``...).
        win: ``"first_completed"`` (default), ``"first_token"`` (the winner is then read to
            completion), a [`WinCondition`][tether.races.WinCondition], or a
            ``Callable[[Response], bool]``: a completed response it rejects is discarded and
            the race goes on.
        stagger: ``None``: start every attempt at once. Seconds: hedge, starting attempt
            *k + 1* only when attempt *k* failed or stayed silent (no token) that long; once
            some attempt streams, no more start unless it fails. Or an
            [`adaptive`][tether.adaptive] stagger.
        grace: Seconds each loser's server-side cancel may take (default: the scope's).
        max_concurrency: With a client: at most this many attempts in flight at once; they
            take their slots in request order. With a scope, pass it to ``open_scope``
            instead (a ValueError here).

    Returns:
        A [`RaceResult`][tether.races.RaceResult]; ``result.winner.response`` is the final
        response.

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
    engine = prepare_race(
        client_or_scope, requests, win, stagger, grace, max_concurrency, handover=False
    )
    try:
        async with anyio.create_task_group() as tg:
            engine.start(tg)
        result = engine.result()
    except BaseException as exc:
        engine.ended(None, exc)
        raise
    engine.ended(result, None)
    return result
