"""ResponseGuard: the cancel protocol for one response, top to bottom (open, stop, finish).

In the order the code runs it (docs/design.md, "The cancel protocol"; the states it moves
through are in ``_lifecycle.py``):

1. ``open`` queues for a slot, sends the request and reads up to ``response.created`` under
   a shield bounded by ``first_event_timeout`` (from the moment the request leaves): a
   cancel arriving meanwhile waits for the id, so the server never runs a response nobody
   knows about.
2. The body reads (``StreamReader.__anext__``, ``_reading.py``).
3. ``stop`` is the one way out: interrupt a reader, close the HTTP stream (freeing its
   connection), then cancel on the server under a shield bounded by ``grace``
   (``_stop_now``; ``_stop_queued`` when every cancel slot was taken), then the journal
   (``_forget``). ``cancel()``, ``detach()``, races and ``close`` all go through it.
4. ``_finish`` records the outcome; ``close`` never suppresses nor replaces what ended it.

This module keeps the order and the bounds: what runs when, under which shield, once. The
guard is a chain of classes, one concern a module: ``GuardFacts`` (``_facts.py``: what it
knows, its `State`) <- ``StreamReader`` (``_reading.py``: the read path) <- ``StopSteps``
(``_stopping.py``: why it stops; cancel, read-back, drain, journal) <- `ResponseGuard`.
Observers see it through a view the facade registers (``set_stream_view``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, final

import anyio
from anyio.lowlevel import checkpoint_if_cancelled

from . import observe
from ._cancel import cancel_slots, unsent
from ._compat import close_sdk_stream, on_request_sent, sdk_inner_generator
from ._critical import ki_protected, run_critical, run_critical_queued
from ._errors import StallError, TetherError
from ._lifecycle import State
from ._outcome import CancelReceipt, DetachedResponse, EndReason
from ._stopping import StopSteps

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from ._scope import Scope

__all__ = ["ResponseGuard", "set_stream_view"]


def _the_guard(guard: ResponseGuard) -> object:
    return guard


_stream_view: Callable[[ResponseGuard], object] = _the_guard


def set_stream_view(factory: Callable[[ResponseGuard], object]) -> None:
    """What ``StreamEvent.Started.stream`` shows observers of a guard: the facade registers its
    ``GuardedStream`` here (``_stream.py``), so the protocol never imports the facade."""
    global _stream_view
    _stream_view = factory


@final
class ResponseGuard(StopSteps):
    """The cancel protocol for one response: open, read, stop, finish (internal).

    One guard per response. The public [`GuardedStream`][tether.GuardedStream] is a thin
    facade over it; races, agents, the sync facade and the CLI drive guards directly through
    the plain-named methods below and those of its base classes (the chain above). Nothing
    outside those modules touches its state, and it changes state only through ``_to``.
    """

    __slots__ = (
        "__weakref__",
        "_abort_requested",
        "_first_event_timeout",
        "_grace",
        "_handle",
        "_holds_concurrency_slot",
        "_key",
        "_opened",
        "_opening",
        "_request",
        "_stopped",
        "handover",
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
        super().__init__(
            scope,
            background=background,
            model=None if request is None else request.get("model"),
            handle=handle,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
        )
        self._key = key  # the job key, for request_cancel
        self._request = request
        self._handle = handle
        self._grace = grace
        self._first_event_timeout = first_event_timeout
        self._opened: anyio.Event | None = None  # set once __aenter__ is done, either way
        self._stopped: anyio.Event | None = None  # made by a second caller of stop(), if any
        self._opening: anyio.CancelScope | None = None
        self._abort_requested = False  # another task gave up the open before it sent anything
        self._holds_concurrency_slot = False  # a max_concurrency slot, released by _finish
        # Asked by close(): True leaves the response to a successor (tether.temporal).
        self.handover: Callable[[BaseException | None], Awaitable[bool]] | None = None

    @property
    def key(self) -> str | None:
        """The job key it was opened with (``request_cancel`` finds it by this)."""
        return self._key

    # -------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._state is not State.NEW:
            raise RuntimeError("a guarded stream can be entered only once")
        self._scope.require_not_exited()
        await checkpoint_if_cancelled()  # already cancelled: send nothing at all
        self._to(State.QUEUED)
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
            await self.close(exc)
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
        observe.emit(
            observe.StreamEvent.Started(
                id=self.node,
                parent=observe.current_parent(),
                model=self._model,
                background=self._background,
                key=self._key,
                resumed=self._handle is not None,
                stream=_stream_view(self),
            )
        )

    async def close(self, exc: BaseException | None) -> None:
        """Leave: stop (if not finished) and record the outcome. Never raises ``Exception``."""
        try:
            try:
                handover = self.handover
                if handover is not None and self._state < State.STOPPING and await handover(exc):
                    self._reason = "detached"  # not cancelled, whatever was marked before
            finally:
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
                self._holds_concurrency_slot = True
            self._to(State.ADMITTED)
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
                self._to(State.OPEN)  # the id is the handle's: nothing was created
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
            self._to(State.OPEN)
            self._sdk_inner = sdk_inner_generator(self._sdk)
            self._update_hot()
            if observe.watched():
                observe.emit(
                    observe.StreamEvent.Opened(id=self.node, response_id=self._response_id)
                )
            if journal is not None and self._intent is not None:
                await journal.started(self._intent, self._response_id)
        self._opening = None
        if (self._response_id is None or self._sdk is None) and opening.cancelled_caught:
            if self._abort_requested and self._state < State.SENDING:
                return  # cancel() before the request left: nothing was sent, nothing to stop
            await checkpoint_if_cancelled()  # an enclosing cancel is not a stall
            self._stall = "first_event"
            raise StallError("first_event", timeout, self._response_id)

    def _sent(self) -> None:
        """The request's headers are leaving: from now on the open must learn the id."""
        if self._state is State.ADMITTED:
            self._to(State.SENDING)
            if self._background and self._opening is not None:
                self._opening.shield = True  # an orphan otherwise: see _open

    def _abort_open(self) -> None:
        """Give up the open if its request has not left yet (nothing sent, nothing to stop)."""
        if self._state < State.SENDING:
            self._abort_requested = True
            if self._opening is not None:
                self._opening.cancel()

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

    @ki_protected
    async def stop(self, reason: EndReason) -> None:
        """The one way out: close the HTTP stream, then cancel on the server. Runs once.

        The whole stop is bounded by ``grace`` (close, cancel with retries, journal) and runs
        to its end even under a native asyncio cancellation or Ctrl-C (``run_critical``);
        a stop with nothing to finish (``_ended_on_its_own``) runs in this task.
        A cancel that finds every slot of its client taken (``_cancel.cancel_slots``)
        queues in this task, not in a child task (``run_critical_queued``: a thousand
        streams stopped at once). A second caller waits for the first one.
        """
        if self._state >= State.STOPPING:
            if self._state < State.STOPPED:
                if self._stopped is None:  # made only when needed: a thousand stops add up
                    self._stopped = anyio.Event()
                with anyio.CancelScope(shield=True):  # the first caller is bounded by grace
                    await self._stopped.wait()
            return
        self._to(State.STOPPING)
        self._hot = False
        if self._reason is None:
            self._reason = reason
        deadline = anyio.current_time() + self._grace
        interruption: BaseException | None = None
        try:
            try:
                if self._ended_on_its_own():
                    await self._stop_now(deadline)  # nothing left that an interruption could cut
                else:
                    await run_critical("stop", lambda: self._stop_now(deadline))
            except BaseException as exc:  # an interruption, raised once the section ended
                interruption = exc
            if self._state is State.CANCEL_QUEUED:
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
            if self._state is not State.FINISHED:  # (a second caller's wait cut: _lifecycle)
                self._to(State.STOPPED)
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
                if not await self._cancel_now(deadline):
                    self._to(State.CANCEL_QUEUED)  # stop() waits, then _stop_queued
                    return
                await self._drain()
            except Exception as exc:  # a bug, an unexpected SDK error: report, never raise
                self._cleanup_failed(exc)
            await self._forget(deadline)

    async def _stop_queued(self, taken: bool, deadline: float) -> None:
        """The rest of a stop that queued for a cancel slot: *taken* says if it got one."""
        with anyio.CancelScope(shield=True, deadline=deadline):
            try:
                if taken:
                    await self._cancel_in_slot(deadline)
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

    def _finish(self, exc: BaseException | None) -> None:
        self._to(State.FINISHED)
        self._outcome = self._build_outcome()
        error = self._outcome.cleanup_error
        self._scope.record(self, self._outcome)
        if observe.watched():
            observe.emit(observe.StreamEvent.Ended(id=self.node, outcome=self._outcome))
        if self._holds_concurrency_slot and self._scope.limiter is not None:
            self._holds_concurrency_slot = False
            self._scope.limiter.release_on_behalf_of(self)
        add_note = getattr(exc, "add_note", None) if isinstance(exc, Exception) else None
        if error is not None and add_note is not None:  # Python >= 3.11
            add_note(f"tether: while stopping response {self._response_id}: {error}")
