"""The staggered launcher of a race: start attempt *k + 1* when *k* failed or stayed silent.

The loop has the shape of trio's happy eyeballs (``_highlevel_open_tcp_stream.py``): in one
task group, start attempt *k*, then wait until it fails, or until it has been silent for
``stagger`` seconds, before starting attempt *k + 1*. The attempts report to a
[`Progress`][tether._race_launch.Progress]; the race (``_race_engine.py``) supplies the
start function, the stagger and the budget's say (``may_hedge``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._hedging import Trigger

__all__ = ["Progress", "launch_staggered"]


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
