"""GuardedStream: a Responses stream bound to a scope, and the cancel protocol around it.

The protocol (DESIGN.md, "The cancel protocol"), in the order the code runs it:

1. ``__aenter__`` sends the request and reads up to ``response.created`` under a shield
   bounded by ``first_event_timeout``: a cancel arriving meanwhile waits for the id, so the
   server never runs a response nobody knows about.
2. ``__anext__`` yields the SDK's own events, tracks sequence numbers, enforces the stall
   timeouts, and resumes a lost connection with ``starting_after``.
3. ``_stop`` is the one way out: interrupt a reader, close the HTTP stream (freeing its
   connection), then cancel on the server under a shield bounded by ``grace``. ``cancel()``,
   ``detach()``, races and ``__aexit__`` all go through it.
4. ``__aexit__`` never suppresses and never replaces the exception that ended the body.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio
import openai
import stamina
from anyio.lowlevel import checkpoint_if_cancelled

from ._cancel import cancel_on_server, log
from ._compat import (
    STREAM_CONNECTION_ERRORS,
    aclose_sdk_stream,
    cancel_cause,
    check_async_client,
    sdk_inner_generator,
)
from ._errors import ResponseNotCompleted, StallError, StallKind, TetherError
from ._outcome import CancelReceipt, DetachedResponse, EndReason, Outcome
from ._scope import Scope
from ._validate import check_positive, check_timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

__all__ = ["GuardedStream", "TextDeltas", "guarded_stream", "resume"]

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
_FINISHED = frozenset({"completed", "failed", "incomplete", "cancelled"})
_RESUME_ATTEMPTS = 5
_UNKNOWN: Any = object()


def _scope_of(scope: Scope | AsyncOpenAI) -> Scope:
    if isinstance(scope, Scope):
        return scope
    return Scope(check_async_client(scope, argument="scope"))


@final
class GuardedStream:
    """A Responses stream whose response cannot outlive the code that reads it.

    Made by [`guarded_stream`][tether.guarded_stream] or [`resume`][tether.resume]; use it
    as an async context manager. Inside, iterate it for the SDK's own
    ``ResponseStreamEvent`` objects. However the block is left before the response
    finishes (a ``break``, an exception, a cancelled scope, a deadline, a stall, Ctrl-C,
    ``cancel()``), the HTTP stream is closed and the response is cancelled on the server
    within ``grace``; then whatever ended the block goes on. A response that finishes is
    never cancelled.

    Example:
        ```python
        async with tether.guarded_stream(scope, model="gpt-5", input="Hi") as stream:
            print(stream.response_id)          # known before the body runs
            async for text in stream.text_deltas():
                print(text, end="")
        print(stream.outcome.reason)           # "completed"
        ```
    """

    def __init__(
        self,
        scope: Scope,
        *,
        request: dict[str, Any] | None,
        handle: DetachedResponse | None,
        background: bool,
        grace: float,
        first_event_timeout: float,
        first_token_timeout: float | None,
        idle_timeout: float | None,
        key: str | None = None,
    ) -> None:
        self._scope = scope
        self._key = key  # fleet: the job key, for request_cancel
        self._request = request
        self._handle = handle
        self._background = background
        self._grace = grace
        self._first_event_timeout = first_event_timeout
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._model: str | None = None if request is None else request.get("model")
        self._sdk: Any = None
        self._sdk_inner: Any = _UNKNOWN  # see _compat.sdk_inner_generator
        self._pending: deque[ResponseStreamEvent] = deque()
        self._response_id: str | None = None if handle is None else handle.response_id
        self._last_seq: int | None = None if handle is None else handle.last_sequence_number
        self._yielded_seq: int | None = self._last_seq
        self._status: str | None = None
        self._final: Response | None = None
        self._finished: str | None = None  # the status of a final lifecycle event
        self._events = 0
        self._deltas = 0
        self._resumes = 0
        self._started = 0.0
        self._entered = False
        self._opened: anyio.Event | None = None  # set once __aenter__ is done, either way
        self._exhausted = False
        # stopping
        self._reason: EndReason | None = None
        self._stall: StallKind | None = None
        self._stopping: anyio.Event | None = None
        self._stopped = False
        self._receipt: CancelReceipt | None = None
        self._cleanup_error: str | None = None
        self._outcome: Outcome | None = None
        self._intent: str | None = None  # this stream's journal entry, if the scope has one
        self._timed = first_token_timeout is not None or idle_timeout is not None

    # ------------------------------------------------------------------ state

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``async with`` body runs."""
        return self._response_id

    @property
    def background(self) -> bool:
        """Whether the response runs in background mode (cancellable on the server)."""
        return self._background

    @property
    def status(self) -> str | None:
        """The last status the stream reported (``queued``, ``in_progress``, ``completed``...)."""
        return self._status

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return self._last_seq

    @property
    def outcome(self) -> Outcome:
        """How the stream ended; available once the ``async with`` block has exited.

        Raises:
            RuntimeError: The stream has not ended yet.
        """
        if self._outcome is None:
            raise RuntimeError("the outcome is known once the `async with` block has exited")
        return self._outcome

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> GuardedStream:
        if self._entered:
            raise RuntimeError("a guarded stream can be entered only once")
        await checkpoint_if_cancelled()  # already cancelled: send nothing at all
        self._entered = True
        self._opened = anyio.Event()
        self._started = anyio.current_time()
        limiter = self._scope.limiter
        if limiter is not None:
            await limiter.acquire_on_behalf_of(self)
        self._scope._enter(self)
        try:
            await self._open()
            # A cancel that arrived while the open was shielded is delivered here, now that
            # the id is known: the body does not start, the response is cancelled.
            await checkpoint_if_cancelled()
        except BaseException as exc:
            await self._stop(self._reason_for(exc))
            self._finish(exc)
            raise
        finally:
            self._opened.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop(self._reason_for(exc))
        self._finish(exc)

    async def _open(self) -> None:
        client = self._scope.client
        timeout = self._first_event_timeout
        # Shield only when the server would keep running an orphan: background creates.
        shield = self._background and self._handle is None
        with anyio.CancelScope(shield=shield) as opening:
            opening.deadline = anyio.current_time() + timeout
            journal = self._scope.journal
            if journal is not None and self._background:
                self._intent = uuid.uuid4().hex
                await journal.intend(
                    self._intent, key=self._key, model=self._model, base_url=str(client.base_url)
                )
            if self._handle is not None:
                if journal is not None:
                    await journal.started(self._intent or "", self._handle.response_id)
                self._sdk = await self._retrieve_stream()
                return
            self._sdk = await client.responses.create(
                stream=True, background=self._background, **self._request or {}
            )
            while self._response_id is None:
                try:
                    event = await self._sdk.__anext__()
                except StopAsyncIteration:
                    raise TetherError("the stream ended before response.created") from None
                self._note(event)
                self._pending.append(event)
            self._sdk_inner = sdk_inner_generator(self._sdk)
            if journal is not None and self._intent is not None:
                await journal.started(self._intent, self._response_id)
        if self._response_id is None and opening.cancelled_caught:
            self._stall = "first_event"
            raise StallError("first_event", timeout, None)

    async def _retrieve_stream(self) -> Any:
        assert self._response_id is not None
        extra: dict[str, Any] = {}
        if self._last_seq is not None:
            extra["starting_after"] = self._last_seq
        return await self._scope.client.responses.retrieve(self._response_id, stream=True, **extra)

    # ---------------------------------------------------------------- reading

    def __aiter__(self) -> GuardedStream:
        return self

    async def __anext__(self) -> ResponseStreamEvent:
        if self._pending:
            event = self._pending.popleft()
            self._yielded_seq = getattr(event, "sequence_number", self._yielded_seq)
            return event
        if self._stopping is not None or self._exhausted or self._sdk is None:
            raise StopAsyncIteration
        if self._timed:
            with anyio.CancelScope(deadline=self._read_deadline()):
                return await self._next()
            # Only reached when the deadline above fired: a stall.
            self._stall = self._stall_kind()
            raise StallError(
                self._stall,
                (self._first_token_timeout if self._stall == "first_token" else self._idle_timeout)
                or 0.0,
                self._response_id,
            )
        return await self._next()

    async def _next(self) -> ResponseStreamEvent:
        """The next new event from the server, resuming a lost connection on the way.

        No cancel scope here (it would cost more than the rest of tether's per-event work):
        another task's ``cancel()`` interrupts a blocked read by closing the stream, and the
        read then fails, which ends the iteration.
        """
        while True:
            try:
                event = await self._sdk.__anext__()
            except StopAsyncIteration:
                if self._stopping is None and self._finished is None and await self._recover(False):
                    continue
                self._exhausted = True
                raise
            except Exception as exc:
                if self._stopping is not None:  # closed under us by cancel() or detach()
                    raise StopAsyncIteration from None
                if isinstance(exc, STREAM_CONNECTION_ERRORS) and await self._recover(True):
                    continue
                raise
            if self._sdk_inner is _UNKNOWN:
                self._sdk_inner = sdk_inner_generator(self._sdk)
            seq = event.sequence_number
            if seq is not None and self._last_seq is not None and seq <= self._last_seq:
                continue  # replayed by a resume: already seen
            self._note(event)
            self._yielded_seq = seq
            return event

    def _read_deadline(self) -> float:
        deadline = math.inf
        if self._first_token_timeout is not None and self._deltas == 0:
            deadline = self._started + self._first_token_timeout
        if self._idle_timeout is not None:
            deadline = min(deadline, anyio.current_time() + self._idle_timeout)
        return deadline

    def _stall_kind(self) -> StallKind:
        if (
            self._first_token_timeout is not None
            and self._deltas == 0
            and anyio.current_time() >= self._started + self._first_token_timeout
        ):
            return "first_token"
        return "idle"

    def _note(self, event: Any) -> None:
        """Book-keeping for one event: the hot path, kept lean."""
        self._events += 1
        seq = event.sequence_number
        if seq is not None:
            self._last_seq = seq
        kind: str = event.type
        if kind.endswith(".delta"):
            self._deltas += 1
        elif kind in _LIFECYCLE:
            response = event.response
            self._status = response.status
            if self._response_id is None:
                self._response_id = response.id
            if self._model is None:
                self._model = response.model
            if response.status in _FINISHED and kind != "response.created":
                self._finished = response.status
                self._final = response

    async def _recover(self, lost: bool) -> bool:
        """The connection ended before a final event: pick the stream up where it stopped.

        *lost* says the connection failed (else it ended cleanly). Only background responses
        can be resumed; a clean end is first checked with a plain ``retrieve`` (the response
        may have been cancelled elsewhere). Returns whether a new stream is open.
        """
        if not self._background or self._response_id is None or self._resumes >= _RESUME_ATTEMPTS:
            return False
        await aclose_sdk_stream(self._sdk, None if self._sdk_inner is _UNKNOWN else self._sdk_inner)
        self._sdk_inner = _UNKNOWN
        client = self._scope.client
        if not lost:
            current = await client.responses.retrieve(self._response_id)
            if current.status in _FINISHED:
                self._status = self._finished = current.status
                self._final = current
                return False
        log.info("resuming response %s after event %s", self._response_id, self._last_seq)
        async for attempt in stamina.retry_context(
            on=(openai.APIConnectionError, openai.InternalServerError),
            attempts=_RESUME_ATTEMPTS,
            timeout=None,
            wait_initial=0.05,
            wait_max=1.0,
        ):
            with attempt:
                self._sdk = await self._retrieve_stream()
        self._resumes += 1
        if self._stopping is not None:  # stopped by another task meanwhile
            await aclose_sdk_stream(self._sdk)
            return False
        return True

    def text_deltas(self) -> AsyncIterator[str]:
        """Iterate the output text as it arrives (the ``delta`` of ``response.output_text.delta``).

        Example:
            ```python
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
            ```
        """
        return TextDeltas(self)

    async def get_final_response(self) -> Response:
        """Read the stream to its end and return the final ``Response``.

        Returns:
            The response of the ``response.completed`` (or ``response.incomplete``) event.

        Raises:
            ResponseNotCompleted: The response failed, was cancelled, or the stream was stopped.

        Example:
            ```python
            response = await stream.get_final_response()
            print(response.output_text, response.usage)
            ```
        """
        async for _ in self:
            pass
        final = self._final
        if final is None or self._finished not in ("completed", "incomplete"):
            raise ResponseNotCompleted(self._response_id, self._status, final)
        return final

    # --------------------------------------------------------------- stopping

    async def cancel(self) -> CancelReceipt:
        """Stop now: close the stream and cancel the response on the server, within grace.

        Safe to call from another task (a stop button, a watchdog) while this one iterates:
        the reader is interrupted first and its iteration simply ends. Calling it again
        returns the same receipt.

        Returns:
            The [`CancelReceipt`][tether.CancelReceipt]; ``kind="none"`` if the response had
            already finished.

        Example:
            ```python
            async for text in stream.text_deltas():
                if "STOP" in text:
                    receipt = await stream.cancel()
                    print(receipt.status)  # "cancelled"
            ```
        """
        await self._wait_opened("cancel")
        await self._stop("explicit")
        if self._receipt is not None:
            return self._receipt
        return CancelReceipt(response_id=self._response_id, kind="none", status=self._status)

    async def detach(self) -> DetachedResponse:
        """Leave the background response running on purpose, and get a handle to resume it.

        The one sanctioned way for a response to outlive its scope: the HTTP stream is closed,
        nothing is cancelled. Give the handle to [`resume`][tether.resume], here or in another
        process.

        Raises:
            TetherError: The response is not a background one (it would stop on disconnect).

        Example:
            ```python
            handle = await stream.detach()
            store(attrs.asdict(handle))
            ```
        """
        if not self._background:
            raise TetherError("only background responses can be detached (background=False)")
        await self._wait_opened("detach")
        if self._response_id is None:
            raise RuntimeError("detach() needs an open stream: call it inside `async with`")
        await self._stop("detached")
        return DetachedResponse(
            response_id=self._response_id, last_sequence_number=self._yielded_seq
        )

    async def _wait_opened(self, what: str) -> None:
        """From another task, while ``__aenter__`` still waits for ``response.created``: wait
        for the id (bounded by ``first_event_timeout``), so the cancel reaches the server."""
        if self._opened is None:
            raise RuntimeError(f"{what}() needs an open stream: call it inside `async with`")
        await self._opened.wait()

    def _lose(self) -> None:
        """Mark this stream as the loser of a race, before its scope is cancelled."""
        if self._reason is None:
            self._reason = "race_lost"

    def _reason_for(self, exc: BaseException | None) -> EndReason:
        if self._reason is not None:
            return self._reason
        if self._stall is not None:
            return "stalled"
        if exc is None:
            if self._finished == "cancelled":
                return "cancelled"
            if self._finished is not None:
                return "completed" if self._finished == "completed" else self._finished  # type: ignore[return-value]
            return "break"
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return "deadline" if cancel_cause(exc) == "deadline" else "scope_cancelled"
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted"
        return "exception"

    async def _stop(self, reason: EndReason) -> None:
        """Close the HTTP stream, then cancel on the server within grace. Runs once."""
        if self._stopping is not None:
            with anyio.CancelScope(shield=True):  # the first caller is bounded by grace
                await self._stopping.wait()
            return
        self._stopping = anyio.Event()
        if self._reason is None:
            self._reason = reason
        started = anyio.current_time()
        try:
            await self._close()  # first: frees the connection, and ends another task's read
            if self._finished is None and self._response_id is not None and reason != "detached":
                if self._background:
                    self._receipt = await cancel_on_server(
                        self._scope.client,
                        self._response_id,
                        grace=max(self._grace - (anyio.current_time() - started), 1e-3),
                        confirm=self._scope.confirm,
                    )
                    if self._receipt.status:
                        self._status = self._receipt.status
                else:
                    self._receipt = CancelReceipt(
                        response_id=self._response_id, kind="disconnect", status=None
                    )
            await self._forget()
        except Exception as exc:  # a bug, the disk, an unexpected SDK error: report, never raise
            self._cleanup_error = f"{type(exc).__name__}: {exc}"
            log.warning("cleanup of response %s failed: %s", self._response_id, exc)
        finally:
            self._stopped = True
            self._stopping.set()

    async def _forget(self) -> None:
        """Remove the journal entry once the response is known to have stopped.

        Kept (for ``tether reap``): a response whose cancel was not confirmed, and a request
        whose ``response.created`` never came (the server may have started it).
        """
        journal = self._scope.journal
        if journal is None or self._intent is None:
            return
        receipt = self._receipt
        if (
            self._finished is not None
            or self._reason == "detached"
            or (receipt is not None and receipt.stopped)
            or (self._response_id is None and self._stall != "first_event")
        ):
            with anyio.move_on_after(self._grace, shield=True):  # bounded: the store may hang
                await journal.finished(self._intent)

    async def _close(self) -> None:
        if self._sdk is None:
            return
        with anyio.move_on_after(self._grace, shield=True):
            try:
                inner = None if self._sdk_inner is _UNKNOWN else self._sdk_inner
                await aclose_sdk_stream(self._sdk, inner)
            except Exception as exc:  # the connection is dropped either way
                log.debug("closing the stream of %s: %r", self._response_id, exc)

    def _finish(self, exc: BaseException | None) -> None:
        receipt = self._receipt
        error = self._cleanup_error or (receipt.error if receipt is not None else None)
        self._outcome = Outcome(
            response_id=self._response_id,
            model=self._model,
            background=self._background,
            reason=self._reason or "exception",
            status=self._status,
            events=self._events,
            deltas=self._deltas,
            last_sequence_number=self._last_seq,
            usage=None if self._final is None else self._final.usage,
            receipt=receipt,
            resumes=self._resumes,
            cleanup_error=error,
            started_at=self._started,
            ended_at=anyio.current_time(),
        )
        self._scope._leave(self, self._outcome)
        if self._scope.limiter is not None:
            self._scope.limiter.release_on_behalf_of(self)
        add_note = getattr(exc, "add_note", None) if isinstance(exc, Exception) else None
        if error is not None and add_note is not None:  # Python >= 3.11
            add_note(f"tether: while stopping response {self._response_id}: {error}")


class _Events(Protocol):
    async def __anext__(self) -> ResponseStreamEvent: ...


@final
class TextDeltas:
    """``text_deltas()`` of a stream: an iterator, not an async generator (nothing to finalise)."""

    def __init__(self, stream: _Events) -> None:
        self._stream = stream

    def __aiter__(self) -> TextDeltas:
        return self

    async def __anext__(self) -> str:
        while True:
            event = await self._stream.__anext__()
            if event.type == "response.output_text.delta":
                return event.delta


def _stream_options(
    scope: Scope,
    grace: float | None,
    first_event_timeout: float | None,
    first_token_timeout: float | None,
    idle_timeout: float | None,
) -> dict[str, Any]:
    return {
        "grace": scope.grace if grace is None else check_positive("grace", grace),
        "first_event_timeout": scope.first_event_timeout
        if first_event_timeout is None
        else check_positive("first_event_timeout", first_event_timeout),
        "first_token_timeout": check_timeout("first_token_timeout", first_token_timeout),
        "idle_timeout": check_timeout("idle_timeout", idle_timeout),
    }


def guarded_stream(
    scope: Scope | AsyncOpenAI,
    *,
    background: bool = True,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    key: str | None = None,
    **create_kwargs: Any,
) -> GuardedStream:
    """Stream a response that is cancelled on the server whenever you stop reading early.

    Sends ``client.responses.create(stream=True, background=True, **create_kwargs)`` on
    entry and waits for ``response.created``, so ``stream.response_id`` is known before your
    code runs. On any early exit the stream is closed first (releasing its connection), the
    response is cancelled on the server within ``grace``, and the exit goes on: exceptions
    propagate unchanged, cancellations are not swallowed. See the cancel protocol in the docs.

    Args:
        scope: A [`Scope`][tether.Scope] from [`open_scope`][tether.open_scope] (its deadline and
            grace apply), or an ``openai.AsyncOpenAI`` for a stream with no deadline.
        background: Run the response in background mode, the only mode the server can cancel.
            With ``False``, stopping early closes the connection (the server stops on disconnect)
            and the receipt says ``kind="disconnect"``.
        grace: Seconds the server-side cancel may take (default: the scope's).
        first_event_timeout: Seconds to wait for ``response.created`` (default: the scope's).
        first_token_timeout: Seconds from the request to the first output delta, or ``None``.
        idle_timeout: Seconds without any event, or ``None``.
        key: A job key (``"conversation-42"``) recorded in the scope's journal, so that
            [`request_cancel`][tether.request_cancel] can stop the stream from any process.
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`GuardedStream`][tether.GuardedStream], to use as ``async with``.

    Raises:
        StallError: A stall timeout fired (the response was cancelled first).
        TypeError: A bad argument type, a sync client, or no ``model``.
        ValueError: ``stream=`` given, or a timeout out of range. Checked before any request.

    Example:
        ```python
        async with tether.guarded_stream(scope, model="gpt-5", input="Essay") as stream:
            async for text in stream.text_deltas():
                if enough(text):
                    break                    # cancelled on the server, not just dropped
        print(stream.outcome.receipt)
        ```

    Added in version 0.1.
    """
    the_scope = _scope_of(scope)
    if "stream" in create_kwargs:
        raise ValueError(
            f"guarded_stream always streams: do not pass stream=, got stream={create_kwargs['stream']!r}"
        )
    if not isinstance(background, bool):
        raise TypeError(f"background must be a bool, got {background!r}")
    if "model" not in create_kwargs and "prompt" not in create_kwargs:
        raise TypeError("guarded_stream() needs model=... (or prompt=...)")
    options = _stream_options(
        the_scope, grace, first_event_timeout, first_token_timeout, idle_timeout
    )
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty str or None, got {key!r}")
    return GuardedStream(
        the_scope, request=create_kwargs, handle=None, background=background, key=key, **options
    )


def resume(
    scope: Scope | AsyncOpenAI,
    handle: DetachedResponse,
    *,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> GuardedStream:
    """Guard a background response again, from where a detached stream left it.

    Streams ``GET /responses/{id}?stream=true&starting_after=N``: the events after the
    handle's sequence number, then live ones. The resumed stream is guarded like any other.

    Args:
        scope: A [`Scope`][tether.Scope], or an ``openai.AsyncOpenAI``.
        handle: What [`detach`][tether.GuardedStream.detach] returned.
        grace: Seconds the server-side cancel may take (default: the scope's).
        first_event_timeout: Seconds to wait for the stream to open (default: the scope's).
        idle_timeout: Seconds without any event, or ``None``.

    Returns:
        A [`GuardedStream`][tether.GuardedStream], to use as ``async with``.

    Example:
        ```python
        async with tether.resume(scope, handle) as stream:
            response = await stream.get_final_response()
        ```

    Added in version 0.1.
    """
    the_scope = _scope_of(scope)
    if not isinstance(handle, DetachedResponse):
        raise TypeError(f"handle must be a tether.DetachedResponse, got {handle!r}")
    options = _stream_options(the_scope, grace, first_event_timeout, None, idle_timeout)
    return GuardedStream(the_scope, request=None, handle=handle, background=True, **options)
