"""How a journal call is bounded: one mechanism, for every store and every caller.

A store that accepts connections and then stalls (a SIGSTOPped Redis, a frozen PostgreSQL
or pgbouncer, an SQLite file another process holds write-locked) must not hold a stop, nor
a scope's exit. Two halves, each in one place:

- ``in_thread`` runs a store's blocking client (sqlite3,
  redis-py, psycopg) in a worker thread that a cancellation *abandons*: the awaiting task
  goes on at once, the thread's result is dropped. The thread itself ends within the store's
  own timeouts, or at once if the store gives an *interrupt* (PostgreSQL shuts its socket
  down: libpq has no client-side timeout on a connection that answers nothing).
- ``within`` is what a caller on the stop path awaits: the call
  runs shielded from outside cancellation and is cut at *deadline* (what is left of grace).
  It returns what went wrong, or ``None``: the caller puts it on the outcome and in the log.

A call that was cut may still reach the store later (the bytes were sent): a removal that
lands then is right anyway (it is only sent for a response known to have stopped), and one
that does not land leaves the entry for ``reap``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Interrupt", "in_thread", "within"]

T = TypeVar("T")


class Interrupt:
    """A way to end a store call's thread early, once its caller went away.

    The thread calls ``arm(stop)`` once it holds something *stop* can break (a socket), and
    ``disarm()`` before it lets go of it; ``fire()`` (from the event loop) calls the armed
    *stop* at most once, never after ``disarm`` (*stop* runs under a lock: it must not block).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self._fired = False

    def arm(self, stop: Callable[[], None]) -> None:
        """Make *stop* what ``fire`` calls (from the worker thread)."""
        with self._lock:
            if self._fired:  # the caller went away before the thread got this far
                stop()
            else:
                self._stop = stop

    def disarm(self) -> None:
        """Nothing to stop any more (from the worker thread)."""
        with self._lock:
            self._stop = None

    def fire(self) -> None:
        """End the thread's call if it is still going (from the event loop)."""
        with self._lock:  # held while stopping: disarm() waits, so what stop breaks is still there
            self._fired = True
            if self._stop is not None:
                self._stop()
                self._stop = None


async def in_thread(
    work: Callable[..., T],
    *args: Any,
    limiter: anyio.CapacityLimiter | None = None,
    interrupt: Interrupt | None = None,
    settle: float = 0.0,
) -> T:
    """``work(*args)`` in a worker thread that a cancellation abandons (then *interrupt* fires).

    Every store call of the built-in journals goes through here: a cancel scope around any
    journal call (a deadline, ``within``, a task group's cancel) cuts it at once. With
    *settle*, an abandoned call then waits up to that many seconds for the thread to end
    (a listener that holds a connection of its own: it is closed before ``attach`` exits).
    """
    done = threading.Event()

    def run() -> T:
        try:
            return work(*args)
        finally:
            done.set()

    try:
        return await anyio.to_thread.run_sync(run, limiter=limiter, abandon_on_cancel=True)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled (or interrupted): abandoned
            if interrupt is not None:
                interrupt.fire()
            if settle > 0 and not done.is_set():
                with anyio.move_on_after(settle, shield=True):
                    await anyio.to_thread.run_sync(done.wait, settle, abandon_on_cancel=True)
        raise


async def within(
    deadline: float, call: Callable[[], Awaitable[object]], *, late: str = "no answer within grace"
) -> str | None:
    """Await ``call()``, shielded, until *deadline*; ``None``, or what went wrong.

    What went wrong is the call's ``Exception`` (``"JournalError: ..."``) or, if the deadline
    cut it, *late*. A cancellation from outside waits for this (it is
    bounded by *deadline*) and is never swallowed: it is delivered at the caller's next
    checkpoint. The scope is shielded with a deadline of its own, so the cut is seen here even
    when an enclosing scope shares the deadline.
    """
    problem: str | None = None
    with anyio.CancelScope(shield=True, deadline=deadline) as bound:
        try:
            await call()
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
    if bound.cancelled_caught:
        problem = late
    return problem
