"""The loop's half of a sync stream: the session task that opens, reads ahead and closes it.

[`GuardedStream`][tether.sync.GuardedStream] (``_sync_stream.py``) is the caller's thread's
half: it hands over the events and waits on the loop. Its base class, ``StreamSession``,
holds what runs on the portal's loop: the *session* task, started in the async scope's task
group, opens the [`ResponseGuard`][tether._protocol.ResponseGuard], runs the read-ahead
(``_sync_buffer.py``) until the ``with`` block is left, then closes the guard with the
body's exception; a Ctrl-C cancels the session's own cancel scope; ``cancel()`` and
``detach()`` stop the guard on the loop and drop what was read ahead. Its state is shared
with the caller's thread only through the futures it resolves (``_ready``, ``_done``) and
the statuses the caller is shown.

A base class rather than an object of its own: the caller's thread reads the shown status
and the buffer on every event, and attributes on the stream itself cost no indirection.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING

import anyio

from ._errors import DeadlineExceeded
from ._sync_buffer import END, ReadAhead, Stop
from ._sync_job import started_anyway
from ._sync_portal import settle

if TYPE_CHECKING:
    from ._outcome import CancelReceipt, DetachedResponse
    from ._protocol import ResponseGuard
    from ._sync_scope import Scope

__all__ = ["StreamSession"]


class StreamSession:
    """The loop's side of one sync stream (the base of ``tether.sync.GuardedStream``).

    Its methods run on the portal's loop, but for ``_interrupt``, which the caller's thread
    calls while it waits.
    """

    def __init__(self, guard: ResponseGuard, scope: Scope) -> None:
        self._guard = guard
        self._scope = scope
        self._ahead = ReadAhead(lambda func: scope.call(func))
        # What the caller has been shown: the open's (set on the loop before the reader
        # starts), then each event handed over; the guard's once the stream has ended
        # for the caller (_settled), since the reader's position is not the caller's.
        self._shown_status: str | None = None
        self._shown_seq: int | None = guard.last_sequence_number  # a resume's handle
        self._settled = False
        # Resolved by the session (on the loop) for the caller's thread.
        self._ready: futures.Future[None] = futures.Future()
        self._done: futures.Future[None] = futures.Future()
        # Owned by the loop thread.
        self._own: anyio.CancelScope | None = None
        self._interrupted = False
        self._opened: anyio.Event | None = None
        self._opening: anyio.Event | None = None  # set as the session starts the guard's open
        self._leave: anyio.Event | None = None
        self._exit_exc: BaseException | None = None

    def _request_exit(self, exc: BaseException | None) -> None:
        """(On the loop.) The body is done: let the session close the guard with *exc*."""
        self._exit_exc = exc
        if self._leave is not None:
            self._leave.set()

    def _interrupt(self, exc: BaseException) -> None:
        """Ctrl-C (or another exception) while waiting: stop the session as *exc* says."""
        self._scope.call(self._interrupt_on_loop, exc)

    def _interrupt_on_loop(self, exc: BaseException) -> None:
        self._guard.mark_reason(self._guard.reason_for(exc))  # "interrupted" for Ctrl-C
        self._interrupted = True
        if self._own is not None:
            self._own.cancel("tether.sync: KeyboardInterrupt")

    def _start(self) -> BaseException | None:
        """Start the session on the loop (under the stream's state lock). Raises what kept it
        from starting. An interruption that lands while the caller waits for the loop to run
        the start (a Ctrl-C: the request may already be on its way) after the session started
        is returned, the session stopped first (bounded by grace), as a Ctrl-C while opening."""
        try:
            self._scope.spawn(self._session, "guarded_stream()", self._prepare)
        except BaseException as exc:
            if not self._started():
                raise
            self._interrupt(exc)
            deferred = settle(self._done)
            if deferred is not None:
                deferred.__cause__ = exc
                return deferred
            return exc
        return None

    def _started(self) -> bool:
        """After an interrupted start: whether the session started anyway."""
        return started_anyway(self._scope, lambda: self._opened is not None)

    def _prepare(self) -> None:
        """(On the loop, before the session starts.) What cancel() and __exit__ wait on."""
        self._opened = anyio.Event()
        self._opening = anyio.Event()
        self._leave = anyio.Event()

    async def _session(self) -> None:
        """(On the loop, in the async scope.) Open, read ahead, close: the stream's life."""
        guard = self._guard
        assert self._opened is not None
        assert self._leave is not None
        try:
            with anyio.CancelScope() as own:
                self._own = own
                if self._interrupted:
                    own.cancel()
                try:
                    assert self._opening is not None
                    self._opening.set()  # guard.open() runs to its first wait before cancel()
                    await guard.open()
                    self._shown_status = guard.status  # before the reader reads ahead
                    self._shown_seq = guard.last_sequence_number
                except Exception as exc:
                    self._ready.set_exception(exc)
                    return
                finally:
                    self._opened.set()
                    if not self._ready.done():
                        self._ready.set_result(None)  # cancelled: the outcome says how
                closed = False
                try:
                    async with anyio.create_task_group() as reader:
                        reader.start_soon(self._ahead.fill, guard)
                        await self._leave.wait()
                        closed = True
                        await guard.close(self._exit_exc)  # the reader's read ends with it
                        self._ahead.unpark()
                except BaseException as exc:  # cancelled: the deadline, scope.cancel(), Ctrl-C
                    if not closed:
                        # Through the reader's task group, trio's Cancelled no longer says
                        # it came from a deadline: the scope does (Ctrl-C marked its own).
                        guard.mark_reason(self._scope.cancel_reason())
                        await guard.close(exc)
                        self._end(guard.require_outcome().reason)
                    raise
        finally:
            self._done.set_result(None)

    def _end(self, reason: str) -> None:
        """(On the loop.) The stream was stopped early: drop what was read ahead."""
        self._settled = True  # the stop's status (a cancel's receipt) is the caller's now
        if reason == "deadline":
            self._ahead.replace(Stop(DeadlineExceeded(self._scope.limit or 0.0)))
        else:
            self._ahead.replace(END)

    async def _cancel_on_loop(self) -> CancelReceipt:
        assert self._opening is not None
        # The guard's cancel() handles an open in progress, as on the async stream: one
        # still queued for a max_concurrency slot gives up and sends nothing (the body then
        # runs with response_id None and no events); one whose request left is waited for
        # until its id is known, then cancelled (no orphan).
        await self._opening.wait()
        receipt = await self._guard.cancel()
        self._end("explicit")
        return receipt

    async def _detach_on_loop(self) -> DetachedResponse:
        handle = await self._guard.detach()
        self._end("detached")
        return handle
