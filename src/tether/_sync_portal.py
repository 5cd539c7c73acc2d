"""Waiting on a blocking portal from sync code, with Ctrl-C kept working and cleanup kept whole.

``tether.sync`` runs the async implementation in an anyio blocking portal: an event loop in
a thread of its own, started per call and joined on exit (``start_blocking_portal``). The
calling thread waits on ``concurrent.futures`` results; these helpers make that wait
responsive to Ctrl-C, and let cleanup finish through a second Ctrl-C.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio
from anyio.from_thread import start_blocking_portal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["PORTAL_THREAD_NAME", "run", "settle", "wait"]

T = TypeVar("T")

PORTAL_THREAD_NAME = "tether-sync"
"""The name of every portal thread (tests check that none is left running)."""

_SIGNAL_CHECK = 0.05
"""Seconds between checks for Ctrl-C while a thread waits on the portal. A lock wait is
interrupted by a signal only on POSIX and only in the thread the OS delivered it to;
waking up regularly makes Ctrl-C (and ``_thread.interrupt_main``) work everywhere. A done
future wakes the waiter at once: this is no polling delay."""


def wait(future: futures.Future[Any]) -> None:
    """Block until *future* is done, staying responsive to Ctrl-C."""
    while not futures.wait((future,), timeout=_SIGNAL_CHECK).done:
        pass


def settle(future: futures.Future[Any]) -> KeyboardInterrupt | None:
    """Wait for cleanup to finish (bounded by grace) even through Ctrl-C; return the last one."""
    deferred: KeyboardInterrupt | None = None
    while True:
        try:
            wait(future)
        except KeyboardInterrupt as interrupt:
            deferred = interrupt
        else:
            return deferred


@final
class _Interruptible(Generic[T]):
    """Runs one coroutine function on the portal, in a cancel scope the caller can cancel."""

    def __init__(self, func: Callable[[], Awaitable[T]], cleanup: Callable[[], Awaitable[object]]):
        self._func = func
        self._cleanup = cleanup
        self._scope: anyio.CancelScope | None = None
        self._interrupted = False

    async def main(self) -> T:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._interrupted:
                    scope.cancel()
                return await self._func()
            raise _Interrupted  # never seen: the caller raises its KeyboardInterrupt instead
        finally:
            with anyio.move_on_after(_CLEANUP_LIMIT, shield=True):
                await self._cleanup()

    def interrupt(self) -> None:
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel("tether.sync: KeyboardInterrupt")


class _Interrupted(Exception):
    """The job was cancelled by Ctrl-C (internal: the caller raises KeyboardInterrupt)."""


_CLEANUP_LIMIT = 10.0
"""Seconds closing the async clients may take (it only closes sockets)."""


def run(func: Callable[[], Awaitable[T]], cleanup: Callable[[], Awaitable[object]]) -> T:
    """Run *func* on a fresh portal and return its result; then *cleanup*, whatever happened.

    Ctrl-C while it runs cancels it (every guarded stream inside then stops through the
    cancel protocol, bounded by grace), waits for that, and raises the KeyboardInterrupt.
    """
    job = _Interruptible(func, cleanup)
    with start_blocking_portal(name=PORTAL_THREAD_NAME) as portal:
        future = portal.start_task_soon(job.main)
        try:
            wait(future)
        except KeyboardInterrupt as interrupt:
            portal.call(job.interrupt)
            deferred = settle(future)
            if deferred is not None:
                raise deferred from interrupt
            raise
        return future.result()
