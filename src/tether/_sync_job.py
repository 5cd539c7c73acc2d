"""One coroutine function run on the portal's loop for a sync caller, that Ctrl-C can cancel.

``Scope.run`` (``_sync_scope.py``: a sync race, anything that returns one result) starts a
``Job`` as a task of the async scope: it runs its function in a cancel scope of its
own and hands the result, the exception, or ``CancelledError`` (cancelled by Ctrl-C or by
the scope) to the caller's thread through a ``concurrent.futures.Future``.

A Ctrl-C can land while the caller waits for the loop to run a start: the start may have run
by then (a job's or a stream's session, whose request may be on its way), and what it started
must stop before the ``KeyboardInterrupt`` goes on, not only when the scope exits;
[`started_anyway`][tether._sync_job.started_anyway] tells whether it ran.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any, final

import anyio

from ._sync_portal import settle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._sync_scope import Scope

__all__ = ["Job", "started_anyway"]


def started_anyway(scope: Scope, started: Callable[[], bool]) -> bool:
    """After a start interrupted while the caller waited for the loop to run it: whether it
    ran (*started*, read on the loop). The loop runs its callbacks in order: once one more has
    run, the start's has, if it was queued."""
    while True:
        try:
            scope.call(_nothing)
        except KeyboardInterrupt:
            continue  # another Ctrl-C: the answer is one loop callback away
        except Exception:  # the scope closed meanwhile: what ran, ran
            return started()
        return started()


def _nothing() -> None:
    """A loop callback that only marks a place in the loop's queue."""


@final
class Job:
    """One coroutine function run inside a scope, in a cancel scope Ctrl-C can cancel."""

    def __init__(self, func: Callable[[], Awaitable[Any]]) -> None:
        self._func = func
        self._scope: anyio.CancelScope | None = None
        self._interrupted = False
        self._spawned = False  # set on the loop, as the scope starts main()
        self.result: futures.Future[Any] = futures.Future()

    def start(self, scope: Scope, what: str) -> None:
        """Start the job in *scope*. A Ctrl-C landing while the loop runs the start, once it
        started, cancels the job and waits for it (bounded by grace), then goes on."""
        try:
            scope.spawn(self.main, what, self._prepare)
        except BaseException as exc:
            if not started_anyway(scope, lambda: self._spawned):
                raise
            scope.call(self.interrupt)
            deferred = settle(self.result)
            if deferred is not None:
                raise deferred from exc
            raise

    def _prepare(self) -> None:
        self._spawned = True

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
