"""The read path of a guarded response: its events, as cheap as the SDK's own.

[`ResponseGuard`][tether._protocol.ResponseGuard] (the protocol: open, stop, finish) is a
`StreamReader`; this module is everything a read does: the hot path, the slow path (events
kept from the open, read deadlines, HTTP/2, the end), resuming a lost connection, and the
per-event book-keeping (``_note``) that the outcome, ``detach()`` and a resume's
``starting_after`` are made of. The facts it keeps (counts, sequence numbers, status, the
guard's `State`) are declared in its base class, ``GuardFacts`` (``_facts.py``), with the
properties they are read through; this class holds only the machinery of reading.

Its speed tricks, each justified by ``benchmarks/bench_guard.py`` (the throughput table:
events per client CPU-second through ``guarded_stream`` against raw SDK iteration, a raw and
a guarded stream read in alternation; see ``docs/design.md``, "What an event costs"):

- ``_hot``: one attribute tested per event instead of seven conditions, recomputed by
  ``_update_hot`` wherever one of them changes (0.981-0.984x before, 0.986x after).
- ``__anext__`` awaits the SDK's inner event generator (``_compat.sdk_next``), one coroutine
  less than ``AsyncStream.__anext__``, in its own frame, with no cancel scope per read (a
  stop interrupts a blocked read by closing the stream; only read deadlines and HTTP/2 pay
  for a scope, on the slow path).
- ``_note`` is inlined in ``__anext__`` (a call costs more than its delta branch): the two
  must be kept alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import openai
import stamina

from ._cancel import log
from ._compat import (
    STREAM_CONNECTION_ERRORS,
    close_sdk_stream,
    drain_sdk_stream,
    is_multiplexed,
    sdk_inner_generator,
    sdk_next,
)
from ._errors import ResponseNotCompleted, StallError, StallKind
from ._facts import GuardFacts
from ._lifecycle import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import DetachedResponse
    from ._scope import Scope

__all__ = ["UNKNOWN", "StreamReader"]

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
UNKNOWN: Any = object()
"""``_sdk_inner`` before the SDK's inner generator is known (``_compat.sdk_inner_generator``)."""


async def _never_opened() -> Any:
    raise StopAsyncIteration  # pragma: no cover - read only after an open


class StreamReader(GuardFacts):
    """The read half of a guard (internal): its events, read from the SDK's stream."""

    __slots__ = (
        "_first_token_timeout",
        "_has_stall_timeout",
        "_hot",
        "_idle_timeout",
        "_multiplexed",
        "_pending",
        "_reading",
        "_scope",
        "_sdk",
        "_sdk_inner",
        "_sdk_next",
    )

    def __init__(
        self,
        scope: Scope,
        *,
        background: bool,
        model: str | None,
        handle: DetachedResponse | None,
        first_token_timeout: float | None,
        idle_timeout: float | None,
    ) -> None:
        super().__init__(background=background, model=model, handle=handle)
        self._scope = scope
        self._sdk: Any = None
        self._sdk_next: Callable[[], Awaitable[Any]] = _never_opened
        self._sdk_inner: Any = UNKNOWN  # see _compat.sdk_inner_generator
        self._pending: list[ResponseStreamEvent] = []  # read before response.created
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._has_stall_timeout = first_token_timeout is not None or idle_timeout is not None
        # On HTTP/2 a read blocked on a closed stream never raises: a reader in another task
        # must then be interrupted through its own cancel scope (HTTP/1.1 needs none).
        self._multiplexed = False
        self._reading: anyio.CancelScope | None = None
        self._hot = False  # the next read may take __anext__'s hot path (see _update_hot)

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
            self._state is State.OPEN
            and not self._pending
            and not self._has_stall_timeout
            and not self._multiplexed
            and self._sdk_inner is not UNKNOWN
        )

    async def _retrieve_stream(self) -> Any:
        assert self._response_id is not None
        extra: dict[str, Any] = {}
        if self._last_seq is not None:
            extra["starting_after"] = self._last_seq
        return await self._scope.client.responses.retrieve(self._response_id, stream=True, **extra)

    # ---------------------------------------------------------------- reading

    def __aiter__(self) -> StreamReader:
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
        if self._state is not State.OPEN:  # not opened, read to the end, or stopping
            raise StopAsyncIteration
        if self._has_stall_timeout or self._multiplexed:
            with anyio.CancelScope(
                deadline=self._read_deadline() if self._has_stall_timeout else math.inf
            ) as reading:
                self._reading = reading
                try:
                    return await self._next()
                finally:
                    self._reading = None
            if self._state >= State.STOPPING:  # interrupted by stop() from another task
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
                if (
                    self._state is State.OPEN
                    and self._finished is None
                    and await self._recover(False)
                ):
                    continue
                self._read_ended()
                raise
            except Exception as exc:
                if self._state >= State.STOPPING:  # closed under us by cancel() or detach()
                    raise StopAsyncIteration from None
                if isinstance(exc, STREAM_CONNECTION_ERRORS) and await self._recover(True):
                    continue
                raise
            if self._sdk_inner is UNKNOWN:
                self._sdk_inner = sdk_inner_generator(self._sdk)
            seq = event.sequence_number
            if seq is not None and self._last_seq is not None and seq <= self._last_seq:
                continue  # replayed by a resume: already seen
            self._note(event)
            self._yielded_seq = seq
            return event

    def _read_ended(self) -> None:
        """The server ended the events (or a stop closed the stream under a read)."""
        self._hot = False
        if self._state is State.OPEN:
            self._to(State.EXHAUSTED)
        else:  # under a stop: it stays where it is, but the events did end
            self._reached = State.EXHAUSTED

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
        await drain_sdk_stream(self._sdk, None if self._sdk_inner is UNKNOWN else self._sdk_inner)
        self._sdk_inner = UNKNOWN
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
        if self._state >= State.STOPPING:  # stopped by another task meanwhile
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
