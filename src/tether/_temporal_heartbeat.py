"""An attempt's heartbeat: tether's checkpoint of every guarded stream, the user's details after.

An activity may open several guarded streams: an agent's turns one after another, or a few
at once. Its heartbeat details hold one checkpoint, so they hold every stream's, in the
order the activity opened them (``Checkpoint.all_from_details``); on a retry the
activity's first stream resumes the first response, its second the second, and so on.

One ``Heartbeats`` per attempt, installed as what ``activity.heartbeat()`` calls when the
attempt's first stream opens, and left there for the rest of the attempt: the activity's
context is the attempt's and goes with it, and a heartbeat of the user's between two
streams must not erase the first one's checkpoint. Places this attempt has not reached
keep the previous attempt's checkpoints: a heartbeat never forgets a response that a later
attempt (or ``ResponseCanceller.cancel_from_failure``) may still have to resume or cancel.
Everything runs on the stream's event loop: no lock. In a sync activity that is a
``tether.sync`` portal's loop (``_temporal_sync.py``), and the user's own
``activity.heartbeat()`` runs in the activity's thread: it reads the places and sends,
never adds or drops one, and ``take``, ``follow`` and ``leave`` run on the loop while that
thread waits for them.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, final

import anyio
from temporalio import activity

from ._cancel import log
from ._compat import installed_heartbeat, swap_heartbeat
from ._temporal_checkpoint import Checkpoint, detail_of, split_details

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

__all__ = ["Heartbeats"]


@final
class Heartbeats:
    """The attempt's heartbeat: every stream's checkpoint first, then the user's details.

    ``activity.heartbeat(*details)`` calls it (``__call__``): the user's details are kept
    and sent after the checkpoints, now and in every later heartbeat.
    """

    __slots__ = ("_inherited", "_live", "_named", "_points", "_send", "_taken", "user")

    def __init__(
        self,
        send: Callable[..., None] | None,
        inherited: tuple[Checkpoint | None, ...],
        user: tuple[Any, ...],
    ) -> None:
        self._send = send
        self._inherited = inherited
        self._points: list[Checkpoint | None] = list(inherited)
        self._live: dict[int, Callable[[], Checkpoint | None]] = {}
        self._taken = 0
        self._named: set[str] = set()
        self.user: tuple[Any, ...] = user
        """The user's own details: the previous attempt's until this one heartbeats."""

    @classmethod
    def of_attempt(cls) -> Heartbeats:
        """The current attempt's: installed on its first call in the attempt. In a local
        activity, one that sends nothing: Temporal keeps no heartbeat of a local activity
        (its core logs a warning for each one), so there is no checkpoint to keep."""
        info = activity.info()
        if info.is_local:
            return cls(None, (), ())
        current = installed_heartbeat()
        if isinstance(current, Heartbeats):
            return current
        inherited, user = split_details(info.heartbeat_details)
        beats = cls(current, inherited, user)
        swap_heartbeat(beats)
        return beats

    def take(self) -> tuple[int, Checkpoint | None]:
        """A stream's block is entered: its place (the next one) and the previous attempt's
        checkpoint there, if any, kept in every heartbeat until ``follow``."""
        index = self._taken
        self._taken += 1
        if index >= len(self._points):
            self._points.extend([None] * (index + 1 - len(self._points)))
        return index, self._inherited[index] if index < len(self._inherited) else None

    def follow(self, index: int, read: Callable[[], Checkpoint | None]) -> None:
        """The stream in place *index* has opened: from now its checkpoint is read with
        *read* at every heartbeat until ``leave`` (never earlier: no beat names a response
        before the code is told of it)."""
        self._live[index] = read

    def leave(self, index: int, last: Checkpoint | None) -> None:
        """The stream in place *index* closed. *last*, its final checkpoint, is sent; with
        ``None`` (its stop did not get to its end) nothing new is said."""
        self._live.pop(index, None)
        if last is not None:
            self._points[index] = last
            self.beat()

    @property
    def durable(self) -> bool:
        """Whether heartbeats reach Temporal (not in a local activity)."""
        return self._send is not None

    def named(self, response_id: str) -> bool:
        """Whether a heartbeat that named *response_id* was handed to Temporal's SDK."""
        return response_id in self._named

    def _refresh(self) -> bool:
        """Read the open streams' checkpoints; whether there is any to send."""
        for index, read in self._live.items():
            point = read()
            if point is not None:
                self._points[index] = point
        return any(self._points)

    def beat(self) -> None:
        """Send every stream's checkpoint, then the user's details; with no checkpoint yet
        (a first stream opening), the user's details alone: the attempt stays alive.
        Never raises: the SDK's own failures cancel the activity."""
        if self._send is None:
            return  # a local activity: Temporal keeps no heartbeat
        points = self._refresh()
        try:
            if points:
                self._send(detail_of(self._points), *self.user)
            else:
                self._send(*self.user)
        except Exception as exc:
            log.warning("heartbeat of a guarded stream's checkpoint failed: %s", exc)
            return
        self._named.update(point.response_id for point in self._points if point is not None)

    @contextlib.asynccontextmanager
    async def kept(self, every: float) -> AsyncGenerator[None]:
        """Heartbeat every *every* seconds while the block runs: an async stream's whole
        block (``TemporalStream``), or an agent's loop, streams open or not (its tools run
        between its streams: without a heartbeat, a tool longer than the heartbeat timeout
        timed the attempt out). The beat loop has its own scope: the task
        group never sees the block's exception, so it can neither swallow nor wrap it."""
        if not self.durable:
            yield
            return
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        beating = anyio.CancelScope()
        tasks.start_soon(self.keep, every, beating)
        try:
            yield
        finally:
            beating.cancel()
            await tasks.__aexit__(None, None, None)

    async def keep(self, every: float, beating: anyio.CancelScope) -> None:
        """Beat every *every* seconds until *beating* is cancelled: the one beat loop, that
        of ``kept`` and of every guarded stream's block (events or none: a model thinking
        for a minute sends nothing, and a cancel is heard only in a heartbeat's answer)."""
        with beating:
            while True:
                await anyio.sleep(every)
                self.beat()

    def __call__(self, *details: Any) -> None:
        """``activity.heartbeat(*details)``: keep the user's details, checkpoints first."""
        self.user = details
        if self._refresh():
            self.beat()
        elif self._send is not None:  # no response yet: the details go as they came
            self._send(*details)
