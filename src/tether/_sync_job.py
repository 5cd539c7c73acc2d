"""One coroutine function run on the portal's loop for a sync caller, that Ctrl-C can cancel.

``Scope.run`` (``_sync_scope.py``: a sync race, anything that returns one result) starts a
``Job`` as a task of the async scope: it runs its function in a cancel scope of its
own and hands the result, the exception, or ``CancelledError`` (cancelled by Ctrl-C or by
the scope) to the caller's thread through a ``concurrent.futures.Future``.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Job"]


@final
class Job:
    """One coroutine function run inside a scope, in a cancel scope Ctrl-C can cancel."""

    def __init__(self, func: Callable[[], Awaitable[Any]]) -> None:
        self._func = func
        self._scope: anyio.CancelScope | None = None
        self._interrupted = False
        self.result: futures.Future[Any] = futures.Future()

    async def main(self) -> None:
        with anyio.CancelScope() as own:
            self._scope = own
            if self._interrupted:
                own.cancel()
            try:
                self.result.set_result(await self._func())
            except Exception as exc:
                self.result.set_exception(exc)
            finally:
                if not self.result.done():  # cancelled: by Ctrl-C or by the scope
                    self.result.set_exception(futures.CancelledError())

    def interrupt(self) -> None:
        """(On the loop.) Cancel the job: Ctrl-C."""
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel("tether.sync: KeyboardInterrupt")
