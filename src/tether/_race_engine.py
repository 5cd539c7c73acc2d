"""The race's engine: the attempts' live state, the decision, every loser stopped.

[`Race`][tether._race_engine.Race] is shared by ``race`` and ``race_stream`` (``_race.py``
builds it). Each attempt is a guarded stream opened in its own task, inside its own
``CancelScope``. The first attempt to win marks every other live attempt lost
(``ResponseGuard.mark_lost``) and cancels its scope: each loser then runs its guard's own
stop path (close, then cancel on the server within grace), all of them concurrently, and
the race returns once all are over. Attempt tasks never raise: failures are collected
(``RaceFailed`` when nothing wins), a bug is re-raised as is once the group is closed, and
cancellation propagates unchanged. With an adaptive stagger, the race settles its hedges'
output-token account when it ends (``Race.ended``).

Concurrency slots (``max_concurrency``) are taken in request order on both backends: the
launcher starts attempt *k + 1* only once attempt *k* is in line for its slot (its task
calls ``task_status.started()`` right before ``ResponseGuard.open``, which joins the
limiter's FIFO queue before its first checkpoint). Without slots to queue for, attempts
started together are started at once: ``tg.start`` waits two scheduler passes for each,
and with a hundred streams live a pass is long (101 parallel attempts took 2.2-2.7 s to
start on trio, ``benchmarks/bench_race.py``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, TypeAlias, final

import anyio

from . import observe
from ._errors import AttemptRejected, RaceFailed, TetherError
from ._hedge_budgets import produced, reported
from ._hedging import AdaptiveStagger
from ._race_launch import Progress, launch_staggered
from ._race_records import RaceAttempt, RaceEvent, RaceResult, WinCondition

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus
    from openai.types.responses import Response, ResponseStreamEvent

    from ._hedging import Bucket, Trigger
    from ._protocol import ResponseGuard
    from ._race_records import AttemptState

__all__ = ["Contestant", "Race", "Stagger"]

Stagger: TypeAlias = "float | AdaptiveStagger | None"
"""What ``stagger=`` accepts."""


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
            exception=self.error,
            started_at=started,
            time_to_first_token=None
            if started is None or self.first_token_at is None
            else self.first_token_at - started,
            elapsed=None if started is None or self.ended_at is None else self.ended_at - started,
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
        # Set once the winner is known, or nothing can win any more (annotated: verifytypes).
        self.decision: anyio.Event = anyio.Event()
        self.progress: Progress = Progress(len(self.contestants))
        self._launcher = anyio.CancelScope()
        self._group = tg.cancel_scope
        self.started_at = anyio.current_time()
        if isinstance(self.stagger, AdaptiveStagger):
            self.stagger.throttle.on_primary()
        if observe.watched():
            observe.emit(
                RaceEvent.Started(
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
        won: int | None = None
        seconds: float | None = None
        if winner is not None and winner.state == "won":
            won = produced(winner.guard.outcome)
            if winner.first_token_at is not None and winner.ended_at is not None:
                seconds = winner.ended_at - winner.first_token_at
        cost = self.stagger.cost
        losers: list[int] = []
        for c in self.contestants:
            if not c.lost:
                continue
            count = reported(c.guard.outcome)
            losers.append(
                cost.loser_cost(
                    produced(c.guard.outcome), (c.ended_at or self.decided_at) - self.decided_at
                )
                if count is None
                else count
            )
        self.stagger.settle(self._held, won, losers, seconds)

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
                RaceEvent.AttemptStarted(
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
                RaceEvent.Decided(
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
                RaceEvent.AttemptEnded(
                    id=contestant.node, parent=self.node, attempt=contestant.record()
                )
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
        errors = [a.exception for a in attempts if a.exception is not None]
        outcomes = [a.outcome for a in attempts if a.outcome is not None]
        if self.winner is not None and self.winner.error is not None:
            message = f"attempt {self.winner.index} won the race, then failed"
        else:
            message = f"all {len(attempts)} attempts of the race failed"
        if not errors:  # pragma: no cover - every attempt that ends without winning has an error
            errors = [TetherError("no attempt won and none reported an error")]
        return RaceFailed(message, errors, outcomes)

    def ended(self, result: RaceResult | None, error: BaseException | None) -> None:
        """Settle an adaptive stagger's budget, and tell observers the race is over (``RaceEvent.Ended``)."""
        self._settle_budget()
        if observe.watched():
            observe.emit(RaceEvent.Ended(id=self.node, result=result, exception=error))
