"""GuardedStream: a Responses stream bound to a scope, and the cancel protocol around it.

The protocol (docs/design.md, "The cancel protocol"), in the order the code runs it:

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
from typing import TYPE_CHECKING, Any, final

import anyio
import openai
import stamina
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from . import observe
from ._cancel import cancel_on_server, cancel_slots, log, unsent
from ._compat import (
    STREAM_CONNECTION_ERRORS,
    cancel_cause,
    close_sdk_stream,
    drain_sdk_stream,
    is_multiplexed,
    lean_target,
    on_request_sent,
    sdk_inner_generator,
    sdk_next,
)
from ._critical import ki_protected, run_critical, run_critical_queued
from ._errors import ResponseNotCompleted, StallError, StallKind, TetherError
from ._journal_bound import within
from ._outcome import CancelReceipt, DetachedResponse, EndReason, StreamOutcome

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from openai.types.responses import Response, ResponseStreamEvent

    from ._scope import Scope

__all__ = ["ResponseGuard"]

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
_JOURNAL_FLOOR = 0.05  # seconds a journal removal gets even when grace is spent
_UNKNOWN: Any = object()


async def _never_opened() -> Any:
    raise StopAsyncIteration  # pragma: no cover - read only after an open


@final
class ResponseGuard:
    """The cancel protocol for one response: open, read, stop, finish (internal).

    One guard per response. The public [`GuardedStream`][tether.GuardedStream] is a thin
    facade over it; races, agents, the sync facade and the CLI drive guards directly through
    the plain-named methods below. Nothing outside this module touches its state.
    """

    __slots__ = (
        "__weakref__",
        "_abort_requested",
        "_admitted",
        "_background",
        "_cleanup_error",
        "_deltas",
        "_entered",
        "_events",
        "_exhausted",
        "_final",
        "_finished",
        "_first_event_timeout",
        "_first_token_timeout",
        "_grace",
        "_handle",
        "_holds_slot",
        "_hot",
        "_idle_timeout",
        "_intent",
        "_key",
        "_last_seq",
        "_model",
        "_multiplexed",
        "_opened",
        "_opening",
        "_outcome",
        "_pending",
        "_queued",
        "_reading",
        "_reason",
        "_receipt",
        "_request",
        "_request_sent",
        "_response_id",
        "_resumes",
        "_scope",
        "_sdk",
        "_sdk_inner",
        "_sdk_next",
        "_stall",
        "_started",
        "_status",
        "_stop_ended",
        "_stopped",
        "_stopping",
        "_timed",
        "_yielded_seq",
        "node",
    )

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
        self._key = key  # the job key, for request_cancel
        self._request = request
        self._handle = handle
        self._background = background
        self._grace = grace
        self._first_event_timeout = first_event_timeout
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._model: str | None = None if request is None else request.get("model")
        self._sdk: Any = None
        self._sdk_next: Callable[[], Awaitable[Any]] = _never_opened
        self._sdk_inner: Any = _UNKNOWN  # see _compat.sdk_inner_generator
        self._pending: list[ResponseStreamEvent] = []  # read before response.created
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
        self._stopping = False  # stop() started
        self._stopped: anyio.Event | None = None  # made by a second caller of stop(), if any
        self._stop_ended = False
        self._receipt: CancelReceipt | None = None
        self._cleanup_error: str | None = None
        self._outcome: StreamOutcome | None = None
        self._intent: str | None = None  # this stream's journal entry, if the scope has one
        self._timed = first_token_timeout is not None or idle_timeout is not None
        self._admitted = False  # past the max_concurrency queue
        self._opening: anyio.CancelScope | None = None
        self._request_sent = False
        self._abort_requested = False
        self._holds_slot = False
        self._queued = False  # the stop waits for a cancel slot (see stop)
        # On HTTP/2 a read blocked on a closed stream never raises: a reader in another task
        # must then be interrupted through its own cancel scope (HTTP/1.1 needs none).
        self._multiplexed = False
        self._reading: anyio.CancelScope | None = None
        self._hot = False  # the next read may take __anext__'s hot path (see _update_hot)
        self.node: int = observe.new_id()
        """This stream's id in progress events."""

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
    def model(self) -> str | None:
        """The model asked for (or reported by the server)."""
        return self._model

    @property
    def events(self) -> int:
        """Events received so far."""
        return self._events

    @property
    def deltas(self) -> int:
        """Output deltas received so far (roughly, tokens seen)."""
        return self._deltas

    @property
    def final_response(self) -> Response | None:
        """The final response, if it finished ``completed`` or ``incomplete``."""
        if self._finished in ("completed", "incomplete"):
            return self._final
        return None

    @property
    def outcome(self) -> StreamOutcome | None:
        """How it ended, once finished (``None`` before)."""
        return self._outcome

    def require_outcome(self) -> StreamOutcome:
        """The outcome; a ``RuntimeError`` while the stream has not ended."""
        if self._outcome is None:
            raise RuntimeError("the outcome is known once the `async with` block has exited")
        return self._outcome

    @property
    def request_sent(self) -> bool:
        """Whether its request started leaving (a stream aborted before sent nothing)."""
        return self._request_sent

    @property
    def key(self) -> str | None:
        """The job key it was opened with (``request_cancel`` finds it by this)."""
        return self._key

    @property
    def admitted(self) -> bool:
        """Whether it is past the ``max_concurrency`` queue (its request may be sent)."""
        return self._admitted

    @property
    def exhausted(self) -> bool:
        """Whether the stream's events were read to their end."""
        return self._exhausted

    # -------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._entered:
            raise RuntimeError("a guarded stream can be entered only once")
        await checkpoint_if_cancelled()  # already cancelled: send nothing at all
        self._entered = True
        if observe.watched():
            self._announce()
        self._opened = anyio.Event()
        self._started = anyio.current_time()
        self._scope.track(self)  # queued ones too: request_cancel finds them by key
        try:
            # In a child task of its own, so that neither a native asyncio cancellation nor
            # Ctrl-C can cut the open between "request sent" and "id known" (_critical.py).
            await run_critical("open", self._open, abort=self._abort_open)
            # A cancel that arrived while the open was shielded is delivered here, now that
            # the id is known: the body does not start, the response is cancelled.
            await checkpoint_if_cancelled()
        except BaseException as exc:
            try:
                await self.stop(self.reason_for(exc))
            finally:
                self._finish(exc)
            raise
        finally:
            self._opened.set()

    async def __aenter__(self) -> ResponseGuard:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(exc)

    def _announce(self) -> None:
        from ._stream import GuardedStream  # the facade, for observers' live views

        observe.emit(
            observe.StreamStarted(
                id=self.node,
                parent=observe.current_parent(),
                model=self._model,
                background=self._background,
                key=self._key,
                resumed=self._handle is not None,
                stream=GuardedStream(self),
            )
        )

    async def close(self, exc: BaseException | None) -> None:
        """Leave: stop (if not finished) and record the outcome. Never raises ``Exception``."""
        try:
            await self.stop(self.reason_for(exc))
        finally:
            self._finish(exc)

    async def _open(self) -> None:
        """Queue for a slot, send the request, read up to ``response.created``.

        Until the request leaves (the slot, the journal's intent, the wait for a pooled
        connection) any cancellation simply aborts it: nothing was sent. From the moment its
        headers go out (``_compat.on_request_sent``) the scope is shielded, so the id is
        always learnt and a cancel can reach the server; ``first_event_timeout`` bounds that.
        """
        client = self._scope.client
        timeout = self._first_event_timeout
        with anyio.CancelScope() as opening:
            self._opening = opening  # dropped below: a thousand open streams add up
            if self._abort_requested:
                opening.cancel()
            limiter = self._scope.limiter
            if limiter is not None:
                await limiter.acquire_on_behalf_of(self)
                self._holds_slot = True
            self._admitted = True
            self._started = anyio.current_time()  # timeouts count from the request
            opening.deadline = self._started + timeout
            journal = self._scope.journal
            if journal is not None and self._background:
                self._intent = uuid.uuid4().hex
                await journal.intend(
                    self._intent, key=self._key, model=self._model, base_url=str(client.base_url)
                )
            if self._handle is not None:
                if journal is not None:
                    await journal.started(self._intent or "", self._handle.response_id)
                self._adopt(await self._retrieve_stream())
                return
            with on_request_sent(client, self._sent):
                self._adopt(
                    await client.responses.create(
                        stream=True, background=self._background, **self._request or {}
                    )
                )
            self._sent()  # a client whose sending tether cannot see: from here on, at least
            while self._response_id is None:
                try:
                    event = await self._sdk_next()
                except StopAsyncIteration:
                    raise TetherError("the stream ended before response.created") from None
                self._note(event)
                self._pending.append(event)
            self._sdk_inner = sdk_inner_generator(self._sdk)
            self._update_hot()
            if observe.watched():
                observe.emit(observe.StreamOpened(id=self.node, response_id=self._response_id))
            if journal is not None and self._intent is not None:
                await journal.started(self._intent, self._response_id)
        self._opening = None
        if (self._response_id is None or self._sdk is None) and opening.cancelled_caught:
            if self._abort_requested and not self._request_sent:
                return  # cancel() before the request left: nothing was sent, nothing to stop
            await checkpoint_if_cancelled()  # an enclosing cancel is not a stall
            self._stall = "first_event"
            raise StallError("first_event", timeout, self._response_id)

    def _sent(self) -> None:
        """The request's headers are leaving: from now on the open must learn the id."""
        if not self._request_sent:
            self._request_sent = True
            if self._background and self._opening is not None:
                self._opening.shield = True  # an orphan otherwise: see _open

    def _abort_open(self) -> None:
        """Give up the open if its request has not left yet (nothing sent, nothing to stop)."""
        if not self._request_sent:
            self._abort_requested = True
            if self._opening is not None:
                self._opening.cancel()

    def _adopt(self, sdk: Any) -> None:
        """Read from *sdk* (an SDK ``AsyncStream``) from now on."""
        self._sdk = sdk
        self._sdk_next = sdk_next(sdk)
        self._multiplexed = is_multiplexed(sdk)
        self._update_hot()

    def _update_hot(self) -> None:
        """Say whether the next read may take ``__anext__``'s hot path: nothing to replay,
        not stopping or ended, no read deadline, HTTP/1.1, the SDK's inner generator known.

        Called wherever one of those changes (the open, ``_adopt``, the slow path, the end,
        ``stop``), so that the hot path tests one attribute instead of seven.
        """
        self._hot = (
            not self._pending
            and not self._stopping
            and not self._exhausted
            and self._sdk is not None
            and not self._timed
            and not self._multiplexed
            and self._sdk_inner is not _UNKNOWN
        )

    async def _retrieve_stream(self) -> Any:
        assert self._response_id is not None
        extra: dict[str, Any] = {}
        if self._last_seq is not None:
            extra["starting_after"] = self._last_seq
        return await self._scope.client.responses.retrieve(self._response_id, stream=True, **extra)

    # ---------------------------------------------------------------- reading

    def __aiter__(self) -> ResponseGuard:
        return self

    async def __anext__(self) -> ResponseStreamEvent:
        if not self._hot:
            return await self._read_slowly()
        # The hot path (no read deadline, HTTP/1.1, nothing to replay: _update_hot): one
        # event straight from the SDK, in this frame. Anything unusual (the end, an error,
        # an event replayed by a resume) is _next's. No cancel scope here (it would cost
        # more than the rest of tether's per-event work): another task's ``cancel()``
        # interrupts a blocked read by closing the stream, and the read then fails, which
        # ends the iteration.
        try:
            event = await self._sdk_next()
        except (StopAsyncIteration, Exception) as exc:
            return await self._next(exc)
        seq = event.sequence_number
        if seq is not None and self._last_seq is not None and seq <= self._last_seq:
            return await self._next()  # replayed by a resume: already seen
        self._events += 1  # _note, inlined: a call costs more than its delta branch
        if seq is not None:
            self._last_seq = seq
        kind: str = event.type
        if kind.endswith(".delta"):
            self._deltas += 1
        elif kind in _LIFECYCLE:
            self._note_lifecycle(event, kind)
        self._yielded_seq = seq
        return event

    async def _read_slowly(self) -> ResponseStreamEvent:
        """Everything but the hot path: replayed events, the end, read deadlines, HTTP/2."""
        if self._pending:
            event = self._pending.pop(0)
            self._yielded_seq = getattr(event, "sequence_number", self._yielded_seq)
            self._update_hot()
            return event
        if self._stopping or self._exhausted or self._sdk is None:
            raise StopAsyncIteration
        if self._timed or self._multiplexed:
            with anyio.CancelScope(
                deadline=self._read_deadline() if self._timed else math.inf
            ) as reading:
                self._reading = reading
                try:
                    return await self._next()
                finally:
                    self._reading = None
            if self._stopping:  # interrupted by stop() from another task
                raise StopAsyncIteration
            # Otherwise the deadline above fired: a stall.
            self._stall = self._stall_kind()
            raise StallError(
                self._stall,
                (self._first_token_timeout if self._stall == "first_token" else self._idle_timeout)
                or 0.0,
                self._response_id,
            )
        event = await self._next()  # e.g. the first event after a resume
        self._update_hot()
        return event

    async def _next(self, failed: BaseException | None = None) -> ResponseStreamEvent:
        """The next new event from the server, resuming a lost connection on the way.

        *failed* is what the hot path's read raised, handled here as if this loop's read
        had raised it.
        """
        while True:
            try:
                if failed is not None:
                    raised, failed = failed, None
                    raise raised
                event = await self._sdk_next()
            except StopAsyncIteration:
                if not self._stopping and self._finished is None and await self._recover(False):
                    continue
                self._exhausted = True
                self._hot = False
                raise
            except Exception as exc:
                if self._stopping:  # closed under us by cancel() or detach()
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
        """Book-keeping for one event (inlined in ``__anext__``'s hot path: keep them alike)."""
        self._events += 1
        seq = event.sequence_number
        if seq is not None:
            self._last_seq = seq
        kind: str = event.type
        if kind.endswith(".delta"):
            self._deltas += 1
        elif kind in _LIFECYCLE:
            self._note_lifecycle(event, kind)

    def _note_lifecycle(self, event: Any, kind: str) -> None:
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
        await close_sdk_stream(self._sdk)
        await drain_sdk_stream(self._sdk, None if self._sdk_inner is _UNKNOWN else self._sdk_inner)
        self._sdk_inner = _UNKNOWN
        self._hot = False
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
                self._adopt(await self._retrieve_stream())
        self._resumes += 1
        if self._stopping:  # stopped by another task meanwhile
            await close_sdk_stream(self._sdk)
            await drain_sdk_stream(self._sdk)
            return False
        return True

    async def read_to_end(self) -> Response:
        """Read to the end; the final response, or ``ResponseNotCompleted``."""
        async for _ in self:
            pass
        final = self._final
        if final is None or self._finished not in ("completed", "incomplete"):
            raise ResponseNotCompleted(self._response_id, self._status, final)
        return final

    # --------------------------------------------------------------- stopping

    async def cancel(self) -> CancelReceipt:
        """Stop now (``explicit``); the receipt (``kind="none"`` if already finished)."""
        if self._opened is not None:
            self.mark_reason("explicit")
        await self.wait_opened("cancel")
        await self.stop("explicit")
        if self._receipt is not None:
            return self._receipt
        return CancelReceipt(response_id=self._response_id, kind="none", status=self._status)

    async def detach(self) -> DetachedResponse:
        """Close the stream, cancel nothing; a handle to resume the background response."""
        if not self._background:
            raise TetherError("only background responses can be detached (background=False)")
        await self.wait_opened("detach")
        if self._response_id is None:
            raise RuntimeError("detach() needs an open stream: call it inside `async with`")
        await self.stop("detached")
        return DetachedResponse(
            response_id=self._response_id, last_sequence_number=self._yielded_seq
        )

    async def wait_opened(self, what: str) -> None:
        """From another task, while ``open()`` runs: a stream still queued (its request not
        sent) gives up at once, sending nothing; one whose request left is waited for until
        its id is known (bounded by ``first_event_timeout``), so the cancel reaches the server."""
        if self._opened is None:
            raise RuntimeError(f"{what}() needs an open stream: call it inside `async with`")
        if not self._opened.is_set():
            self._abort_open()
        with anyio.CancelScope(shield=True):  # bounded by the open's own deadline
            await self._opened.wait()

    def mark_lost(self) -> None:
        """Mark this stream as the loser of a race, before its scope is cancelled."""
        self.mark_reason("race_lost")

    def mark_reason(self, reason: EndReason) -> None:
        """Say why the stream will stop, before the cancellation that stops it arrives."""
        if self._reason is None:
            self._reason = reason

    def reason_for(self, exc: BaseException | None) -> EndReason:
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

    @ki_protected
    async def stop(self, reason: EndReason) -> None:
        """The one way out: close the HTTP stream, then cancel on the server. Runs once.

        The whole stop is bounded by ``grace`` (close, cancel with retries, journal) and runs
        to its end even under a native asyncio cancellation or Ctrl-C (``run_critical``).
        A cancel that finds every slot of its client taken (``_cancel.cancel_slots``)
        queues in this task, not in a child task (``run_critical_queued``: a thousand
        streams stopped at once). A second caller waits for the first one.
        """
        if self._stopping:
            if not self._stop_ended:
                if self._stopped is None:  # made only when needed: a thousand stops add up
                    self._stopped = anyio.Event()
                with anyio.CancelScope(shield=True):  # the first caller is bounded by grace
                    await self._stopped.wait()
            return
        self._stopping = True
        self._hot = False
        if self._reason is None:
            self._reason = reason
        deadline = anyio.current_time() + self._grace
        interruption: BaseException | None = None
        try:
            try:
                await run_critical("stop", lambda: self._stop_now(deadline))
            except BaseException as exc:  # an interruption, raised once the section ended
                interruption = exc
            if self._queued:
                slots = cancel_slots(self._scope.client)
                try:
                    await run_critical_queued(
                        "cancel",
                        lambda: slots.acquire_on_behalf_of(self),
                        lambda taken: self._stop_queued(taken, deadline),
                        deadline,
                    )
                except BaseException as exc:
                    interruption = interruption or exc
            if interruption is not None:
                raise interruption
        finally:
            self._stop_ended = True
            if self._stopped is not None:
                self._stopped.set()

    async def _stop_now(self, deadline: float) -> None:
        """Close the stream, then cancel on the server if a cancel slot is free (else queue)."""
        with anyio.CancelScope(shield=True, deadline=deadline):
            try:
                if self._reading is not None:
                    self._reading.cancel()  # a reader blocked in another task, on HTTP/2
                if self._sdk is not None:
                    await close_sdk_stream(self._sdk)  # frees the connection, ends a read
                if self._cancel_needed():
                    if not self._background:
                        self._disconnected()
                    elif not self._take_slot():
                        self._queued = True  # stop() waits for a slot, then _stop_queued
                        return
                    else:
                        try:
                            # One turn of the loop first: when many streams stop at once,
                            # their closes then run before the cancels, which otherwise pay
                            # for every still-open connection in the pool's assignment pass
                            # (100 race losers: 2.8x one cancel with it, 3.1x without).
                            await cancel_shielded_checkpoint()
                            await self._cancel_on_server(deadline)
                        finally:
                            cancel_slots(self._scope.client).release_on_behalf_of(self)
                await self._drain()
            except Exception as exc:  # a bug, an unexpected SDK error: report, never raise
                self._cleanup_failed(exc)
            await self._forget(deadline)

    async def _stop_queued(self, taken: bool, deadline: float) -> None:
        """The rest of a stop that queued for a cancel slot: *taken* says if it got one."""
        with anyio.CancelScope(shield=True, deadline=deadline):
            try:
                if taken:
                    try:
                        await self._cancel_on_server(deadline)
                    finally:
                        cancel_slots(self._scope.client).release_on_behalf_of(self)
                else:  # grace ran out in the queue: nothing was sent
                    self._receipt = unsent(
                        self._response_id or "",
                        grace=self._grace,
                        latency=self._grace - max(deadline - anyio.current_time(), 0.0),
                    )
                await self._drain()
            except Exception as exc:  # a bug, an unexpected SDK error: report, never raise
                self._cleanup_failed(exc)
            await self._forget(deadline)

    def _cancel_needed(self) -> bool:
        return (
            self._finished is None and self._response_id is not None and self._reason != "detached"
        )

    def _take_slot(self) -> bool:
        try:
            cancel_slots(self._scope.client).acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            return False
        return True

    def _disconnected(self) -> None:
        # The server stops a non-background response when its connection closes; what it
        # last reported (in_progress) is no longer true, and nothing says more.
        self._status = None
        self._receipt = CancelReceipt(
            response_id=self._response_id or "", kind="disconnect", status=None
        )

    def _cleanup_failed(self, exc: Exception) -> None:
        self._cleanup_error = f"{type(exc).__name__}: {exc}"
        log.warning("cleanup of response %s failed: %s", self._response_id, exc)

    async def _cancel_on_server(self, deadline: float) -> None:
        """The server-side cancel, holding one of the client's cancel slots."""
        response_id = self._response_id or ""
        watched = observe.watched()
        if watched:
            observe.emit(
                observe.CancelStarted(
                    id=self.node, response_id=response_id, reason=self._reason or ""
                )
            )
        client = self._scope.client
        sdk = self._sdk
        self._receipt = await cancel_on_server(
            client,
            response_id,
            grace=max(deadline - anyio.current_time(), 1e-3),
            confirm=self._scope.confirm,
            lean=None if sdk is None else lean_target(client, sdk),
            slot_held=True,
        )
        if watched:
            observe.emit(observe.CancelEnded(id=self.node, receipt=self._receipt))
        if self._receipt.status:
            self._status = self._receipt.status

    async def _drain(self) -> None:
        if self._sdk is not None:
            # After the cancel: finish the SDK's half-run generators (never waits).
            await drain_sdk_stream(
                self._sdk, None if self._sdk_inner is _UNKNOWN else self._sdk_inner
            )

    async def _forget(self, deadline: float) -> None:
        """Remove the journal entry once the response is known to have stopped, within grace.

        Kept (for ``tether reap``): a response whose cancel was not confirmed, a request whose
        ``response.created`` never came (the server may have started it), and an entry the
        journal could not remove in time (the failure is on the outcome and in the log).
        """
        journal = self._scope.journal
        if journal is None or self._intent is None:
            return
        receipt = self._receipt
        if not (
            self._finished is not None
            or self._reason == "detached"
            or (receipt is not None and receipt.stopped)
            or (self._response_id is None and self._stall != "first_event")
        ):
            return
        intent = self._intent
        problem = await within(
            max(deadline, anyio.current_time() + _JOURNAL_FLOOR), lambda: journal.finished(intent)
        )
        if problem is not None:
            message = f"journal: could not remove the entry of {self._response_id} ({problem}); it stays for reap"
            self._cleanup_error = self._cleanup_error or message
            log.warning("%s", message)

    def _finish(self, exc: BaseException | None) -> None:
        receipt = self._receipt
        error = self._cleanup_error or (receipt.error if receipt is not None else None)
        self._outcome = StreamOutcome(
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
        self._scope.record(self, self._outcome)
        if observe.watched():
            observe.emit(observe.StreamEnded(id=self.node, outcome=self._outcome))
        if self._holds_slot and self._scope.limiter is not None:
            self._holds_slot = False
            self._scope.limiter.release_on_behalf_of(self)
        add_note = getattr(exc, "add_note", None) if isinstance(exc, Exception) else None
        if error is not None and add_note is not None:  # Python >= 3.11
            add_note(f"tether: while stopping response {self._response_id}: {error}")
