"""Holds: park requests at one point of the protocol until the test lets them go.

`ResponsesEmulator.hold("created")` keeps new responses from sending
`response.created`; `hold("cancel")` parks cancel requests. Tests use them to put the
client exactly in the window they want to exercise (a cancel while the response id is
unknown; many cancels in flight at once), with no sleeps. The hold it returns,
`ResponsesEmulator.Hold` (in `_server.py`), holds one of the `Gate`s defined here.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

__all__ = ["Gate", "HoldPoint"]

HoldPoint = Literal["created", "cancel"]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Gate:
    """Closed while any hold is active; server-side waiters park until it reopens.

    Thread-safe: holds are taken and released by tests, waited on by the server loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds = 0
        self._closed_for_good = False
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def held(self) -> bool:
        return self._holds > 0 and not self._closed_for_good

    def acquire(self) -> None:
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        with self._lock:
            self._holds -= 1
            if self._holds > 0:
                return
            waiters, self._waiters = self._waiters, []
        for future in waiters:
            future.get_loop().call_soon_threadsafe(_resolve, future)

    def open_for_good(self) -> None:
        """Let every parked request go, now and later (the server is stopping)."""
        with self._lock:
            self._closed_for_good = True
            waiters, self._waiters = self._waiters, []
        for future in waiters:
            future.get_loop().call_soon_threadsafe(_resolve, future)

    def reopen(self) -> None:
        """Undo `open_for_good` (the server is starting again)."""
        with self._lock:
            self._closed_for_good = False

    async def wait(self) -> None:
        """Return at once if no hold is active, else when the last one is released."""
        with self._lock:
            if not self.held:
                return
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
        await future
