"""The one place a sync thread waits on tether's event loop, with Ctrl-C kept working.

Every blocking call of ``tether.sync`` (opening a stream, waiting for events once the
buffer is empty, leaving a block, a race, a ``cancel()``) waits on a
``concurrent.futures.Future`` through [`wait`][tether._sync_portal.wait]. If Ctrl-C
arrives meanwhile, the waiter tells the loop (its *interrupt* callback, which stops the
work through the cancel protocol), waits for that cleanup (bounded by grace) through any
further Ctrl-C, and then lets the ``KeyboardInterrupt`` go on. There is no second path.

Scopes still open when the interpreter exits (``OPEN``) are exited by an ``atexit`` hook,
while their portal threads can still run: a block left open in a generator that only the
interpreter's last collection closes would otherwise wait for a loop that no longer runs
(daemon threads stop when finalization starts), and the process would never exit.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.from_thread import BlockingPortal

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

__all__ = ["BACKEND", "OPEN", "PORTAL_THREAD_NAME", "settle", "start_portal", "wait"]

OPEN: weakref.WeakSet[AbstractContextManager[Any]] = weakref.WeakSet()
"""The ``tether.sync`` scopes entered and not exited yet (each one's portal thread runs)."""
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=OPEN.clear)


@atexit.register
def _exit_the_open_scopes() -> None:
    """Exit every scope still open: its streams are stopped (cancelled on the server) and
    its portal thread joined, each stop within grace. Its errors are not the exit's."""
    for scope in list(OPEN):
        with suppress(Exception):
            scope.__exit__(None, None, None)


PORTAL_THREAD_NAME = "tether-sync"
"""The name of every portal thread (tests check that none is left running)."""

BACKEND: Literal["asyncio", "trio"] = "asyncio"
"""The event loop the portal runs (tests and benchmarks run both)."""

_SIGNAL_CHECK = 0.1
"""Seconds between wake-ups of a thread waiting on the loop, to let an exception raised into
it land: a real SIGINT interrupts a lock wait at once on POSIX, but ``_thread.interrupt_main``
(and Ctrl-C on Windows) does not wake one, nor does an exception another thread raises into
this one (``PyThreadState_SetAsyncExc``: Temporal cancels a sync activity that way). A done
future wakes the waiter at once: this is no polling delay. A timed-out wait costs CPU (about
0.2 ms on the 2-core benchmark machine), and a hand-off wait in ``bench_sync.py``'s read lasts
about 50 ms: with this and ``_block``'s wait, the caller's thread spent 23.0 / 21.0 ms (asyncio
/ trio portal) on a 5,000-event read where 0.05 s and ``futures.wait`` spent 27.2 / 26.7 ms
(medians of 20 alternated rounds in one run; the whole read costs about 1.1 s of CPU)."""


def _block(future: futures.Future[Any]) -> None:
    # ``Future.exception`` waits on the future's own condition: a wake-up cost 50-65 us of
    # CPU against ``futures.wait``'s 80-110 us, which builds and installs a waiter on every
    # call.
    while True:
        try:
            future.exception(_SIGNAL_CHECK)
        except futures.TimeoutError:
            continue
        except futures.CancelledError:
            pass
        return


def settle(future: futures.Future[Any]) -> BaseException | None:
    """Wait for *future* (cleanup, bounded by grace) through Ctrl-C, or any exception raised
    into this thread meanwhile (Temporal's cancel of a sync activity); return the last one."""
    deferred: BaseException | None = None
    while True:
        try:
            _block(future)
        except BaseException as interrupt:  # held until the cleanup is done, then raised
            deferred = interrupt
        else:
            return deferred


def wait(
    future: futures.Future[Any],
    interrupt: Callable[[BaseException], object] | None = None,
    cleanup: futures.Future[Any] | None = None,
) -> None:
    """Block until *future* is done, staying responsive to Ctrl-C.

    On Ctrl-C (or anything else raised while blocked): ``interrupt(exc)`` asks the loop to
    stop the work, then *cleanup* (default: *future*) is awaited through further Ctrl-Cs,
    then the exception goes on. Without *interrupt*, the wait itself is cleanup: a Ctrl-C
    (or an exception raised into this thread) is held until *future* is done, then raised.
    """
    if interrupt is None:
        deferred = settle(future)
        if deferred is not None:
            raise deferred
        return
    try:
        _block(future)
    except BaseException as exc:
        interrupt(exc)
        deferred = settle(future if cleanup is None else cleanup)
        if deferred is not None:
            raise deferred from exc
        raise


_START_LIMIT = 5.0
"""Seconds a portal's thread may take to start its loop, after a ``Thread.start`` that an
exception raised into the caller cut short (it takes milliseconds)."""


@contextmanager
def start_portal() -> Generator[BlockingPortal]:
    """``anyio.from_thread.start_blocking_portal``, but safe against an exception raised into
    this thread while the portal starts or stops (Ctrl-C, Temporal's cancel of a sync
    activity). anyio's (4.16) joins its thread in a ``finally`` even when the wait for the
    portal to start was interrupted, and nothing stops that portal: the caller hangs for
    good. Here both waits go through ``settle``: what lands is held until the portal has
    started, or stopped, and its thread is joined; then it goes on."""
    started: futures.Future[BlockingPortal] = futures.Future()

    async def run_portal() -> None:
        async with BlockingPortal() as portal:
            started.set_result(portal)
            await portal.sleep_until_stopped()

    def run() -> None:
        try:
            anyio.run(run_portal, backend=BACKEND)
        except BaseException as exc:  # the loop did not start: the caller raises it
            if not started.done():
                started.set_exception(exc)

    thread = threading.Thread(target=run, daemon=True, name=PORTAL_THREAD_NAME)
    deferred: BaseException | None = None
    try:
        thread.start()
    except BaseException as exc:  # raised while the thread starts: did it? (its loop: ms)
        deferred = exc
        if not futures.wait((started,), timeout=_START_LIMIT).done:
            raise
    try:
        deferred = settle(started) or deferred
        portal = started.result()  # what kept the loop from starting
        if deferred is not None:
            _stop(portal, cancel_remaining=True)
            raise deferred
        try:
            yield portal
        except BaseException:
            _stop(portal, cancel_remaining=True)  # the body's exception goes on, not this
            raise
        deferred = _stop(portal, cancel_remaining=False)
        if deferred is not None:
            raise deferred
    finally:
        thread.join()


def _stop(portal: BlockingPortal, *, cancel_remaining: bool) -> BaseException | None:
    """Stop *portal*'s loop; return what was raised into this thread meanwhile."""
    try:
        stopping = portal.start_task_soon(portal.stop, cancel_remaining)
    except RuntimeError:  # its loop has ended already
        return None
    return settle(stopping)
