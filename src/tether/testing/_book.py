"""The ledger's book: its state, written by the emulator's server thread, waited on by tests.

The public [`Ledger`][tether.testing.Ledger] is a read-only view of one book. The emulator's
app and response runs write through the book's methods (`add`, `request`,
`cancel_started`, `cancel_finished`, `changed`); `ResponsesEmulator.wait_for` waits through
`wait_for` and `wait_for_sync`, woken on every change, on asyncio or trio, without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._ledger import Ledger

__all__ = ["LedgerBook"]


class _Waiter(Protocol):
    def wake(self) -> None: ...


class _ThreadWaiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class _AsyncWaiter:
    """Wakes one task on the caller's event loop (asyncio or trio) from any thread."""

    __slots__ = ("_pending", "_schedule", "event")

    def __init__(self) -> None:
        import anyio

        self.event = anyio.Event()
        self._pending = False
        self._schedule: Callable[[Callable[[], None]], object]
        try:
            self._schedule = asyncio.get_running_loop().call_soon_threadsafe
        except RuntimeError:  # not asyncio: anyio's only other backend is trio
            import trio

            self._schedule = trio.lowlevel.current_trio_token().run_sync_soon

    def wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        # RuntimeError: the waiting loop has finished (trio.RunFinishedError is one too).
        with contextlib.suppress(RuntimeError):
            self._schedule(self.event.set)


@final
class LedgerBook:
    """What the emulator recorded, and the interface its server thread records through.

    Counters and records are read through `Ledger`; a field write is a single atomic
    store, the rest happens under `lock`.
    """

    def __init__(self) -> None:
        self.lock: threading.Lock = threading.Lock()
        self.records: dict[str, Ledger.Record] = {}
        self._waiters: list[_Waiter] = []
        self.request_count: int = 0
        self.cancel_requests: int = 0
        self.cancels_in_flight: int = 0
        self.max_concurrent_cancels: int = 0

    # --- written by the server thread -------------------------------------------------

    def add(self, record: Ledger.Record) -> None:
        """Record a new response."""
        with self.lock:
            self.records[record.id] = record
        self.changed()

    def cancel_started(self) -> None:
        """Count a cancel request received."""
        with self.lock:
            self.cancel_requests += 1
            self.cancels_in_flight += 1
            self.max_concurrent_cancels = max(self.max_concurrent_cancels, self.cancels_in_flight)
        self.changed()

    def cancel_finished(self) -> None:
        """Count a cancel request answered."""
        with self.lock:
            self.cancels_in_flight -= 1
        self.changed()

    def request(self) -> None:
        """Count a ``POST /v1/responses`` request received."""
        with self.lock:
            self.request_count += 1
        self.changed()

    def changed(self) -> None:
        """Wake every waiter: a record or a counter changed."""
        if not self._waiters:
            return
        with self.lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.wake()

    # --- waiting ----------------------------------------------------------------------

    def _subscribe(self, waiter: _Waiter) -> None:
        with self.lock:
            self._waiters.append(waiter)

    def _unsubscribe(self, waiter: _Waiter) -> None:
        with self.lock:
            self._waiters.remove(waiter)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until *predicate()* is true, re-checking it on every change.

        Raises:
            TimeoutError: Not true within *timeout* seconds.
        """
        import anyio

        with anyio.fail_after(timeout):
            while True:
                waiter = _AsyncWaiter()
                self._subscribe(waiter)
                try:
                    if predicate():
                        return
                    await waiter.event.wait()
                finally:
                    self._unsubscribe(waiter)

    def wait_for_sync(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Block until *predicate()* is true, re-checking it on every change.

        Raises:
            TimeoutError: Not true within *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            waiter = _ThreadWaiter()
            self._subscribe(waiter)
            try:
                if predicate():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not waiter.event.wait(remaining):
                    if predicate():
                        return
                    raise TimeoutError(f"ledger condition not met within {timeout!r} s")
            finally:
                self._unsubscribe(waiter)
