"""The read-ahead buffer of a sync stream: filled on the loop, drained by the caller's thread.

A task on the portal's loop reads the async guard into a ``deque``; the caller's thread
``popleft``s it (each is atomic), and crosses to the loop only when it finds it empty. Then
it parks on a ``concurrent.futures.Future``, which the loop resolves with the next event it
pushes: a burst of events is handed over in one wake-up. At most ``READ_AHEAD`` events are
held; beyond that the loop waits for the caller to drain them (backpressure: the HTTP
stream is read at most that far ahead of your code).

The hand-over has no lost wake-up: the caller sets its waiter, then looks at the buffer
again before blocking; the loop pushes, then looks for a waiter. One of the two always
sees the other (the lock only keeps the waiter and the parked flag consistent). The loop
looks at a flag the caller raises with each new waiter and it lowers with its one kick:
testing the waiter itself kicked on every event of a burst until the waker ran, and a
waiter found unneeded (the buffer filled before the caller blocked) stayed set, so the
read path paid a call per event (0.5-0.7 % of the events per CPU-second in a same-run A/B
of ``bench_sync.py``'s 5,000-event stream).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent import futures
from typing import TYPE_CHECKING, Any, final

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["END", "READ_AHEAD", "ReadAhead", "Stop"]

READ_AHEAD = 256
"""Events the loop may hold before it waits for the caller to drain them."""


@final
class Stop:
    """What ends the buffer: the end of the stream, an error, the deadline, the block's exit."""

    __slots__ = ("error", "sticky")

    def __init__(self, error: BaseException | None, *, sticky: bool = False) -> None:
        self.error = error
        """Raised in the caller's thread, or ``None`` for a plain end."""
        self.sticky = sticky
        """Raised by every ``next()``, not once (after the block)."""


END = Stop(None)


@final
class ReadAhead:
    """Events read ahead on the loop, for one caller's thread to drain.

    *call* runs a sync function on the loop (the portal's ``call``).
    """

    def __init__(self, call: Callable[[Callable[[], object]], object]) -> None:
        self.events: deque[Any] = deque()
        """The buffer itself: the caller's fast path is ``events.popleft()``."""
        self._call = call
        self._lock = threading.Lock()
        self._waiter: futures.Future[None] | None = None
        self._wanted = False  # a waiter was set since the last kick: the reader's one check
        self._parked = False
        self._refill: anyio.Event | None = None
        self._kick: anyio.Event | None = None  # set when a waiting caller has events to take
        self._filled = False  # fill() has ended: the waker's last kick ends it

    # ------------------------------------------------------------ on the loop

    async def fill(self, source: AsyncIterator[Any]) -> None:
        """Read *source* into the buffer until it ends (or raises an ``Exception``).

        A waiting caller is woken by a second task, which runs only once the reader yields
        to the loop (it waits for the network, or parks): the events parsed from one
        network read are handed over in one wake-up, not one each.
        """
        events = self.events
        self._kick = anyio.Event()
        async with anyio.create_task_group() as waker:
            waker.start_soon(self._run_waker)
            try:
                while True:
                    if len(events) >= READ_AHEAD:
                        await self._park()
                    events.append(await source.__anext__())
                    if self._wanted:  # once per wait, not per event of the burst
                        self._wanted = False
                        self._kick_waker()
            except StopAsyncIteration:
                self.push(END)
            except (
                Exception
            ) as exc:  # the SDK's error event, a stall: raised in the caller's thread
                self.push(Stop(exc))
            finally:
                self._filled = True  # the waker's last kick: it wakes, and ends
                self._kick_waker()

    def _kick_waker(self) -> None:
        kick = self._kick
        if kick is not None and not kick.is_set():
            kick.set()

    async def _run_waker(self) -> None:
        # Ended by a last kick, not by cancelling its task group: on asyncio a cancel is
        # not free (anyio formats the task's repr into the message), and this is per block.
        while not self._filled:
            assert self._kick is not None
            await self._kick.wait()
            self._kick = anyio.Event()
            self._wake()

    async def _park(self) -> None:
        with self._lock:
            if len(self.events) < READ_AHEAD:  # drained meanwhile
                return
            self._refill = anyio.Event()
            self._parked = True
        await self._refill.wait()

    def unpark(self) -> None:
        """Let a parked ``fill`` go on (it then finds a stopped source and ends)."""
        self._parked = False
        if self._refill is not None:
            self._refill.set()

    def _wake(self) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push(self, item: Any) -> None:
        """Append *item* and wake the caller if it waits."""
        self.events.append(item)
        self._wake()

    def replace(self, item: Stop) -> None:
        """The stream was stopped early: drop what was read ahead, end with *item*."""
        self.events.clear()
        self.unpark()
        self.push(item)

    # --------------------------------------------------- in the caller's thread

    def take(self, block: Callable[[futures.Future[None]], None]) -> Any:
        """The next item, once the buffer was found empty: *block* waits on a future."""
        while True:
            waiter: futures.Future[None] = futures.Future()
            with self._lock:
                self._waiter = waiter
                self._wanted = True
                unpark, self._parked = self._parked, False
            if unpark:
                self._call(self.unpark)
            if not self.events:  # else it came in before the waiter was set
                block(waiter)
            try:
                return self.events.popleft()
            except IndexError:
                continue

    def seal(self, item: Stop) -> None:
        """(The reader has ended.) Drop what is left; from now on, *item*."""
        self.events.clear()
        self.events.append(item)
