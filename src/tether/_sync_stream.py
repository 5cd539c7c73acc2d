"""The sync GuardedStream: the async one, driven through a blocking portal.

Every method hands one coroutine to the portal's event loop and waits for it; the async
[`GuardedStream`][tether.GuardedStream] does the work, its ``stop`` stays the one cleanup
path. What this class adds is only what a thread needs: Ctrl-C while waiting (the open is
aborted under its shield, then stopped as ``interrupted``), a deadline that stops the
stream even while the body runs its own code, and a ``cancel()`` any thread may call.
"""

from __future__ import annotations

import math
import threading
from concurrent import futures
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import anyio
from anyio.from_thread import start_blocking_portal

from ._errors import DeadlineExceeded
from ._outcome import CancelReceipt
from ._sync_portal import PORTAL_THREAD_NAME, settle, wait

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from types import TracebackType

    import openai
    from anyio.from_thread import BlockingPortal
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import DetachedResponse, Outcome
    from ._protocol import ResponseGuard

__all__ = ["GuardedStream"]

T = TypeVar("T")

_END: Any = object()


@final
class GuardedStream:
    """A Responses stream, for sync code, whose response cannot outlive the ``with`` block.

    Made by [`tether.sync.guarded_stream`][tether.sync.guarded_stream] or
    [`tether.sync.resume`][tether.sync.resume]; use it as a context manager. The names and
    records are those of the async [`tether.GuardedStream`][tether.GuardedStream]: iterate it
    for the SDK's ``ResponseStreamEvent`` objects, read ``response_id`` (known before the body
    runs), ``cancel()``, ``detach()``, ``text_deltas()``, ``get_final_response()``, and
    ``outcome`` after the block.

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

    def __init__(
        self, stream: ResponseGuard, client: openai.AsyncOpenAI, deadline: float | None
    ) -> None:
        self._async = stream
        self._client = client
        self._deadline = deadline
        self._lock = threading.Lock()  # guards _portal and _state against cancel() elsewhere
        self._state: Literal["new", "opening", "open", "closed"] = "new"
        self._portal: BlockingPortal | None = None
        self._exit_stack: ExitStack | None = None
        self._watchdog: futures.Future[None] | None = None
        self._expired = False
        # Owned by the portal's event loop thread.
        self._opened: anyio.Event | None = None
        self._enter_scope: anyio.CancelScope | None = None
        self._abort_requested = False
        self._deadline_at = math.inf

    # ------------------------------------------------------------------ state

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``with`` body runs (``None`` before)."""
        return self._async.response_id

    @property
    def background(self) -> bool:
        """Whether the response runs in background mode (cancellable on the server)."""
        return self._async.background

    @property
    def status(self) -> str | None:
        """The last status the stream reported (``queued``, ``in_progress``, ``completed``...)."""
        return self._async.status

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return self._async.last_sequence_number

    @property
    def outcome(self) -> Outcome:
        """How the stream ended; available once the ``with`` block has exited.

        Raises:
            RuntimeError: The stream has not ended yet.
        """
        if self._state != "closed":
            raise RuntimeError("the outcome is known once the `with` block has exited")
        return self._async.require_outcome()

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> GuardedStream:
        with ExitStack() as stack:
            with self._lock:  # a cancel() from another thread waits until it can be served
                if self._state != "new":
                    raise RuntimeError("a guarded stream can be entered only once")
                self._state = "opening"
                portal = stack.enter_context(start_blocking_portal(name=PORTAL_THREAD_NAME))
                stack.callback(self._shut, portal)
                self._opened = portal.call(anyio.Event)
                self._portal = portal
            self._open(portal)
            try:
                if self._deadline is not None:
                    self._watchdog = portal.start_task_soon(self._watch)
            except BaseException as exc:
                self._stop_async(portal, exc, exc.__traceback__)
                raise
            with self._lock:
                self._state = "open"
            self._exit_stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        portal = self._portal
        if stack is None or portal is None:  # pragma: no cover - __enter__ did not return
            return
        with stack:
            if self._watchdog is not None:
                self._watchdog.cancel()
            deferred = self._stop_async(portal, exc, tb)
        if deferred is not None:
            deferred.__context__ = exc
            raise deferred
        if exc is None and self._expired:
            raise DeadlineExceeded(self._deadline or 0.0)

    def _open(self, portal: BlockingPortal) -> None:
        """Run the async ``__aenter__``; on Ctrl-C, abort it through the cancel protocol."""
        future = portal.start_task_soon(self._aenter)
        try:
            wait(future)
        except BaseException as exc:  # Ctrl-C while the request was opening
            portal.call(self._abort_open, exc)
            deferred = settle(future)
            if not future.cancelled() and future.exception() is None and future.result():
                self._stop_async(portal, exc, exc.__traceback__)  # it opened just before the abort
            if deferred is not None:
                raise deferred from exc
            raise
        future.result()  # raises what made the open fail (the guard has cleaned up)

    async def _aenter(self) -> bool:
        """The async open, bounded by the deadline; False if aborted by Ctrl-C."""
        assert self._opened is not None
        try:
            with anyio.CancelScope() as scope:
                if self._deadline is not None:
                    self._deadline_at = scope.deadline = anyio.current_time() + self._deadline
                self._enter_scope = scope
                if self._abort_requested:
                    scope.cancel()
                await self._async.open()
                return True
            if self._abort_requested:
                return False
            raise DeadlineExceeded(self._deadline or 0.0)
        finally:
            self._enter_scope = None
            self._opened.set()

    def _abort_open(self, exc: BaseException) -> None:
        # The open is shielded until the id is known (no orphan); the cancel lands right after.
        self._async.mark_reason(self._async.reason_for(exc))  # "interrupted" for Ctrl-C
        self._abort_requested = True
        if self._enter_scope is not None:
            self._enter_scope.cancel()

    async def _watch(self) -> None:
        """Stop the stream when the deadline passes, even while the body runs its own code."""
        await anyio.sleep_until(self._deadline_at)
        self._expired = True
        await self._async.stop("deadline")

    def _stop_async(
        self, portal: BlockingPortal, exc: BaseException | None, tb: TracebackType | None
    ) -> KeyboardInterrupt | None:
        """Run the async ``__aexit__`` (the one cleanup path) with what ended the body."""
        future = portal.start_task_soon(self._async.close, exc)
        deferred = settle(future)
        future.result()
        return deferred

    def _shut(self, portal: BlockingPortal) -> None:
        """Forget the portal, close the async client, stop the loop (its thread is joined)."""
        with self._lock:
            self._portal = None
            self._state = "closed"
        try:
            deferred = settle(portal.start_task_soon(self._client.close))
        finally:
            # Every response is stopped by now: cancel what is left (a read abandoned by
            # Ctrl-C ends with its closed stream anyway).
            portal.call(portal.stop, True)
        if deferred is not None:
            raise deferred

    # ---------------------------------------------------------------- reading

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run *func* on the portal for the thread in the ``with`` block."""
        portal = self._portal
        if portal is None:
            raise RuntimeError("use the stream inside its `with` block")
        future = portal.start_task_soon(func)
        wait(future)
        try:
            return future.result()
        except Exception as exc:
            if self._expired:  # the deadline stopped the stream under this call
                raise DeadlineExceeded(self._deadline or 0.0) from exc
            raise

    def __iter__(self) -> Iterator[ResponseStreamEvent]:
        return self

    def __next__(self) -> ResponseStreamEvent:
        if self._state == "closed":
            raise StopIteration
        if self._expired:
            raise DeadlineExceeded(self._deadline or 0.0)
        event = self._call(self._anext)
        if event is _END:
            if self._expired:
                raise DeadlineExceeded(self._deadline or 0.0)
            raise StopIteration
        return event

    async def _anext(self) -> Any:
        try:
            return await self._async.__anext__()
        except StopAsyncIteration:
            return _END

    def text_deltas(self) -> Iterator[str]:
        """Iterate the output text as it arrives (the ``delta`` of ``response.output_text.delta``).

        Example:
            ```python
            for text in stream.text_deltas():
                print(text, end="", flush=True)
            ```
        """
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
        return self._call(self._async.read_to_end)

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
        with self._lock:
            portal = self._portal
            if portal is None:
                if self._state == "new":
                    raise RuntimeError("cancel() needs an open stream: call it inside `with`")
                return self._settled_receipt()
            future = portal.start_task_soon(self._acancel)
        try:
            wait(future)
            return future.result()
        except futures.CancelledError:  # the block exited meanwhile: the stream is stopped
            return self._settled_receipt()

    async def _acancel(self) -> CancelReceipt:
        assert self._opened is not None
        await self._opened.wait()  # the id first: see _abort_open
        return await self._async.cancel()

    def _settled_receipt(self) -> CancelReceipt:
        receipt = self._async.require_outcome().receipt
        if receipt is not None:
            return receipt
        return CancelReceipt(response_id=self.response_id, kind="none", status=self.status)

    def detach(self) -> DetachedResponse:
        """Leave the background response running on purpose, and get a handle to resume it.

        The HTTP stream is closed, nothing is cancelled. Give the handle to
        [`tether.sync.resume`][tether.sync.resume] (or the async
        [`tether.resume`][tether.resume]), here or in another process.

        Raises:
            TetherError: The response is not a background one.

        Example:
            ```python
            handle = stream.detach()
            store(attrs.asdict(handle))
            ```
        """
        return self._call(self._async.detach)


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
