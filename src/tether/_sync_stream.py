"""The sync GuardedStream: the async guard read by a task on the loop, drained by your thread.

Design, chosen by measurement (``benchmarks/bench_sync.py``, ``docs/benchmarks/sync.md``,
events per client CPU-second against an emulator in another process): the first version
made one portal round trip per event, 0.22x the raw sync SDK on a shared 2-core machine.
Now a *session* task, inside the async scope's task group, opens the
[`ResponseGuard`][tether._protocol.ResponseGuard] and reads it ahead into a buffer
(``_sync_buffer.py``, at most 256 events); ``__next__`` is a ``popleft``. The caller's
thread crosses to the loop only when the buffer is empty: it then parks on a
``concurrent.futures.Future``, resolved once the reader yields to the loop, so the events
of one network read are handed over in one wake-up (waking per event measured about
0.8x; batched, about 0.95x). Reading with the sync SDK in the caller's thread would
need a second read path and a second way to stop (interrupting a sync read blocked in
``recv``, the id under a shield, the book-keeping shared by two threads), for the about
5 % left (``docs/design.md`` weighs it, "The sync facade reuses the async code"); this
keeps the one stop path, the async ``ResponseGuard.stop``, for every way out:

- leaving the block: ``__exit__`` hands the body's exception to the session, which
  calls ``guard.close(exc)``;
- Ctrl-C while waiting (to start, to open, for events; ``_start`` and
  [`wait`][tether._sync_portal.wait]) marks the guard ``interrupted`` and cancels the
  session's own cancel scope; the open finishes under its shield, then the guard stops;
- the deadline: the async scope's, which cancels the session like any task;
- ``cancel()`` and ``detach()``, from any thread: ``guard.cancel()`` / ``guard.detach()``
  on the loop, which close the stream under the reader.

Events read ahead but not handed to you are dropped when the stream stops early; a
detach handle counts only the events you were handed, and ``status`` and
``last_sequence_number`` describe those events (what the open read, then each event handed
over), not the reader's position, as on the async stream, whose reads are the caller's:
once the stream has ended for you (its end handed over, an early stop, the block's exit),
``status`` is the guard's, which then includes what the stop learnt from the server.

This module is the caller's thread's half (the hand-over, the checks, the public methods);
the loop's half (the session task, the stops on the loop) is ``StreamSession`` (``_sync_session.py``).
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import TYPE_CHECKING, Any, Literal, final

from ._errors import DeadlineExceeded
from ._outcome import CancelReceipt, DetachedResponse
from ._sync_buffer import END, Stop
from ._sync_portal import wait
from ._sync_session import StreamSession

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import StreamOutcome
    from ._protocol import ResponseGuard
    from ._sync_scope import Scope

__all__ = ["GuardedStream"]

_LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
"""The events that carry the response, and so its status (as ``_protocol``'s)."""


@final
class GuardedStream(StreamSession):
    """A Responses stream, for sync code, whose response cannot outlive the ``with`` block.

    Made by [`tether.sync.guarded_stream`][tether.sync.guarded_stream] or
    [`tether.sync.resume`][tether.sync.resume]; use it as a context manager. The names and
    records are those of the async [`tether.GuardedStream`][tether.GuardedStream]: iterate it
    for the SDK's ``ResponseStreamEvent`` objects, read ``response_id`` (known before the body
    runs), ``cancel()``, ``detach()``, ``text_deltas()``, ``get_final_response()``, and
    ``outcome`` after the block. A ``for`` after a ``break`` goes on where the first
    stopped; a stream is read once: a ``for`` after its end, or anything but ``outcome``
    and ``cancel()`` after the block, raises ``RuntimeError``.

    ``cancel()`` is thread-safe: call it from any thread. Other methods belong to the thread
    that entered the block.

    Example:
        ```python
        with tether.sync.guarded_stream(client, model="gpt-5", input="Hi") as stream:
            print(stream.response_id)          # known before the body runs
            for event in stream:
                if event.type == "response.output_text.delta" and "!" in event.delta:
                    break                      # closed, then cancelled on the server
        print(stream.outcome.receipt)
        ```
    """

    def __init__(self, guard: ResponseGuard, scope: Scope, *, owns_scope: bool) -> None:
        super().__init__(guard, scope)
        self._owns_scope = owns_scope
        self._state_lock = threading.Lock()  # _state, against cancel() in another thread
        self._state: Literal["new", "open", "closed"] = "new"
        self._buffer = self._ahead.events
        self._last: Any = None  # the last event handed to the caller
        self._handed_seq = self._shown_seq  # what a detach handle resumes after
        self._ended = False  # the caller was told the stream ended (StopIteration)

    def __repr__(self) -> str:
        guard = self._guard
        return (
            f"<tether.sync.GuardedStream response_id={guard.response_id!r} status={self.status!r}>"
        )

    # ------------------------------------------------------------------ state

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``with`` body runs (``None`` before)."""
        return self._guard.response_id

    @property
    def background(self) -> bool:
        """Whether the response runs in background mode (cancellable on the server)."""
        return self._guard.background

    @property
    def status(self) -> str | None:
        """The status the events handed to you reported (``queued``, ``in_progress``...).

        As on the async stream: the ``response.created`` the open read, then each event
        you are handed, never events read ahead but not yet handed to you; once the stream
        has ended for you (its end, ``cancel()``, ``detach()``, the deadline, the block's
        exit), the last status known, a cancel's included (``cancelled``).
        """
        if self._settled or self._state == "closed":
            return self._guard.status
        return self._shown_status

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event handed to you (before the first, of the
        ``response.created`` the open read, as on the async stream)."""
        last = self._last
        return self._shown_seq if last is None else last.sequence_number

    @property
    def outcome(self) -> StreamOutcome:
        """How the stream ended; available once the ``with`` block has exited.

        Raises:
            RuntimeError: The stream has not ended yet.
        """
        if self._state != "closed":
            raise RuntimeError("the outcome is known once the `with` block has exited")
        return self._guard.require_outcome()

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> GuardedStream:
        scope = self._scope
        with self._state_lock:  # a cancel() from another thread waits for the session
            if self._state != "new":
                raise RuntimeError("a guarded stream can be entered only once")
            self._state = "open"
            try:
                if self._owns_scope:
                    scope.__enter__()
                failed = self._start()  # a Ctrl-C once it started: the session is stopped
            except BaseException:
                self._state = "closed"
                raise
        try:
            if failed is not None:
                raise failed
            wait(self._ready, self._interrupt, self._done)
            self._ready.result()  # what made the open fail (the guard has cleaned up)
            if self._guard.outcome is not None:  # stopped by the scope while opening
                wait(self._done)  # a Ctrl-C meanwhile is raised once it is done
                scope.raise_cancelled("guarded_stream()")
                raise RuntimeError("the stream stopped while opening")  # pragma: no cover
        except BaseException as exc:
            self._close_scope(exc)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "closed":  # pragma: no cover - __enter__ did not return
            return
        try:
            if not self._done.done():
                self._scope.tell(self._request_exit, exc)
            wait(self._done)  # the guard's close, bounded by grace; Ctrl-C waits for it
        except BaseException as error:
            self._close_scope(error)
            raise
        expired = exc is None and self._guard.require_outcome().reason == "deadline"
        self._close_scope(exc)
        if expired:
            raise DeadlineExceeded(self._scope.limit or 0.0)

    def _close_scope(self, exc: BaseException | None) -> None:
        with self._state_lock:
            self._state = "closed"
        if not self._ended:  # what was read ahead is gone: next() now says why
            self._ahead.seal(Stop(self._after_the_block("iterating"), sticky=True))
        if self._owns_scope:
            self._scope.__exit__(type(exc) if exc else None, exc, None)

    # ---------------------------------------------------------------- reading

    def __iter__(self) -> Iterator[ResponseStreamEvent]:
        self._check_readable("iterating")
        return self

    def __next__(self) -> ResponseStreamEvent:
        try:
            item = self._buffer.popleft()
        except IndexError:
            item = self._next_slow()
        if item.__class__ is Stop:
            return self._stop(item)
        self._last = item
        if item.type in _LIFECYCLE:
            self._shown_status = item.response.status
        return item

    def _next_slow(self) -> Any:
        """The buffer is empty: wait for the reader (the only time this thread crosses)."""
        if self._state != "open":
            self._check_readable("iterating")
        return self._ahead.take(lambda waiter: wait(waiter, self._interrupt, self._done))

    def _stop(self, item: Stop) -> Any:
        # From now on, every next() says the stream ended (or, after the block, raises).
        self._buffer.appendleft(item if item.sticky else END)
        self._ended = True
        self._settled = True
        if item.error is not None:
            raise item.error
        raise StopIteration

    def _after_the_block(self, what: str) -> RuntimeError:
        reason = self._guard.outcome.reason if self._guard.outcome else "exited"
        return RuntimeError(
            f"{what} a stream after its `with` block (it ended: {reason}): read it inside the block"
        )

    def _check_readable(self, what: str) -> None:
        if self._state == "new":
            raise RuntimeError(f"{what} a stream needs its `with` block: enter it first")
        if self._state == "closed":
            raise self._after_the_block(what)
        if self._ended:
            raise RuntimeError(
                f"{what} a stream that has already ended: its events are read once "
                "(get_final_response() still works)"
            )

    def text_deltas(self) -> Iterator[str]:
        """Iterate the output text as it arrives (the ``delta`` of ``response.output_text.delta``).

        Example:
            ```python
            for text in stream.text_deltas():
                print(text, end="", flush=True)
            ```
        """
        self._check_readable("text_deltas() on")
        return _TextDeltas(self)

    def get_final_response(self) -> Response:
        """Read the stream to its end and return the final ``Response``.

        Raises:
            ResponseNotCompleted: The response failed, was cancelled, or the stream was stopped.
            DeadlineExceeded: The deadline stopped the stream first.

        Example:
            ```python
            response = stream.get_final_response()
            print(response.output_text, response.usage)
            ```
        """
        if self._state != "open":
            self._check_readable("get_final_response() on")
        if not self._ended:
            for _ in self:
                pass
        # The guard has read to its end: this only checks how it ended.
        future = self._scope.submit(self._guard.read_to_end)
        if future is None:
            raise RuntimeError("get_final_response(): the scope exited, which stopped the stream")
        wait(future)
        return future.result()

    # --------------------------------------------------------------- stopping

    def cancel(self) -> CancelReceipt:
        """Stop now: close the stream and cancel the response on the server, within grace.

        Thread-safe: a stop button in another thread may call it while this one iterates;
        the iteration then simply ends. Called while the stream is still opening, it waits
        for the response's id, then cancels (no orphan). Calling it again, or after the
        block, returns the same receipt.

        Returns:
            The [`CancelReceipt`][tether.CancelReceipt]; ``kind="none"`` if the response had
            already finished.

        Raises:
            RuntimeError: The stream was never entered.

        Example:
            ```python
            for text in stream.text_deltas():
                if "STOP" in text:
                    receipt = stream.cancel()
                    print(receipt.status)      # "cancelled"
            ```
        """
        with self._state_lock:  # never taken on the loop: submitting under it is safe
            if self._state == "new":
                raise RuntimeError("cancel() needs an open stream: call it inside `with`")
            if self._state == "closed":
                return self._settled_receipt()
            future = self._scope.submit(self._cancel_on_loop)
        if future is None:  # the scope's exit stops the stream (stop_abandoned)
            wait(self._done)  # a Ctrl-C meanwhile is raised once it is done
            return self._settled_receipt()
        try:
            wait(future)
            return future.result()
        except futures.CancelledError:  # the block exited meanwhile: the stream is stopped
            return self._settled_receipt()

    def _settled_receipt(self) -> CancelReceipt:
        receipt = self._guard.require_outcome().receipt
        if receipt is not None:
            return receipt
        return CancelReceipt(response_id=self.response_id, kind="none", status=self.status)

    def detach(self) -> DetachedResponse:
        """Leave the background response running on purpose, and get a handle to resume it.

        The HTTP stream is closed, nothing is cancelled. Give the handle to
        [`tether.sync.resume`][tether.sync.resume] (or the async
        [`tether.resume`][tether.resume]), here or in another process. It resumes after
        the last event you were handed.

        Raises:
            TetherError: The response is not a background one.
            RuntimeError: Called outside the ``with`` block.

        Example:
            ```python
            handle = stream.detach()
            store(attrs.asdict(handle))
            ```
        """
        if self._state != "open":
            if self._state == "closed":
                reason = self._guard.outcome.reason if self._guard.outcome else "exited"
                raise RuntimeError(
                    f"detach() after the `with` block: the stream has already ended ({reason})"
                )
            raise RuntimeError("detach() needs an open stream: call it inside `with`")
        last = self._last
        seen = self._handed_seq if last is None else last.sequence_number
        future = self._scope.submit(self._detach_on_loop)
        if future is None:
            raise RuntimeError("detach(): the scope's block exited, which stopped the stream")
        wait(future)
        handle = future.result()
        return DetachedResponse(response_id=handle.response_id, last_sequence_number=seen)


@final
class _TextDeltas:
    """``stream.text_deltas()``: the text of each ``response.output_text.delta``."""

    def __init__(self, stream: GuardedStream) -> None:
        self._stream = stream

    def __iter__(self) -> _TextDeltas:
        return self

    def __next__(self) -> str:
        while True:
            event = next(self._stream)
            if event.type == "response.output_text.delta":
                return event.delta
