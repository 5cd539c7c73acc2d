"""TemporalStream: a guarded stream inside a Temporal activity, checkpointed in its heartbeats.

Made by ``tether.temporal.guarded_stream`` (``temporal.py``, which checks the activity's
context and builds the stream) in an ``async def`` activity: on entry it takes its place in
the attempt's heartbeat and resumes that place's response or creates a new one
(``_temporal_place.py``), then beats the attempt's heartbeat (``_temporal_heartbeat.py``:
every stream's checkpoint, the user's own details after them) until it closes. Its sync
twin is ``SyncTemporalStream`` (``_temporal_sync.py``).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, final

import anyio

from ._errors import DeadlineExceeded
from ._stream import GuardedStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import CancelReceipt, StreamOutcome
    from ._temporal_place import Place

__all__ = ["TemporalStream"]


@final
class TemporalStream:
    """A guarded stream inside a Temporal activity, checkpointed in its heartbeats.

    Made by [`tether.temporal.guarded_stream`][tether.temporal.guarded_stream]; use it as an
    async context manager, as a [`GuardedStream`][tether.GuardedStream] (its events, its
    ``text_deltas()``, ``get_final_response()``, ``cancel()`` and ``outcome``).

    Example:
        ```python
        async with tether.temporal.guarded_stream(client, model="gpt-5", input=p) as stream:
            print(stream.response_id, stream.resumed)
            return (await stream.get_final_response()).output_text
        ```
    """

    __slots__ = ("_beat_every", "_beating", "_left", "_place", "_stream")

    def __init__(self, place: Place, *, left: float | None, beat_every: float) -> None:
        self._place = place
        self._left = left
        self._beat_every = beat_every
        self._stream: GuardedStream | None = None
        self._beating: contextlib.AsyncExitStack | None = None  # Heartbeats.kept, entered

    def __repr__(self) -> str:
        return f"<tether.temporal.TemporalStream response_id={self.response_id!r}>"

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``async with`` body runs."""
        return None if self._stream is None else self._stream.response_id

    @property
    def resumed(self) -> bool:
        """Whether this attempt resumed the response of a previous attempt's checkpoint."""
        return self._place.resumed

    @property
    def user_details(self) -> tuple[Any, ...]:
        """Your own heartbeat details, without tether's checkpoint: the previous attempt's
        (what its last ``activity.heartbeat(...)`` said) until you heartbeat in this one.

        Example:
            ```python
            async with tether.temporal.guarded_stream(client, model="m", input=p) as stream:
                done = stream.user_details  # () on a first attempt
            ```
        """
        return self._place.beats.user

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return None if self._stream is None else self._stream.last_sequence_number

    @property
    def outcome(self) -> StreamOutcome:
        """How the stream ended, once the block exited (see ``GuardedStream.outcome``)."""
        return self._require("outcome").outcome

    def _require(self, what: str) -> GuardedStream:
        if self._stream is None:
            raise RuntimeError(f"{what} needs an open stream: use it inside `async with`")
        return self._stream

    async def __aenter__(self) -> TemporalStream:
        left = self._left
        place = self._place
        place.take()
        stream: GuardedStream | None = None
        try:
            # The attempt stays alive while the stream opens (a scope's slot, a resume's
            # check): until it has, a heartbeat says only what the attempt had said.
            await self._start_beating()
            with anyio.CancelScope(
                deadline=math.inf if left is None else anyio.current_time() + left
            ) as bound:
                stream = GuardedStream(await place.choose(), left)
            if stream is None or bound.cancelled_caught:
                raise DeadlineExceeded(left or 0.0)
            self._stream = stream
            await stream.__aenter__()
        except BaseException:
            try:
                await self._stop_beating()
            finally:
                self._leave(stream)
            raise
        place.follow(stream)  # the id reaches Temporal before the first event reaches the code
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._require("__aexit__")
        try:
            await stream.__aexit__(exc_type, exc, tb)  # the guard asks NextAttempt
        finally:
            try:
                await self._stop_beating()
            finally:
                self._leave(stream)

    def _leave(self, stream: GuardedStream | None) -> None:
        try:
            outcome = None if stream is None else stream.outcome
        except RuntimeError:  # the stop did not get to its end: say nothing new
            outcome = None
        self._place.leave(stream, outcome)

    async def _start_beating(self) -> None:
        """Start the attempt's beat loop (``Heartbeats.kept``) around the whole stream: its
        task group encloses the stream's own deadline scope."""
        beating = contextlib.AsyncExitStack()
        await beating.enter_async_context(self._place.beats.kept(self._beat_every))
        self._beating = beating

    async def _stop_beating(self) -> None:
        """End the beat loop (its own scope: its task group never sees the body's exception,
        so it can neither swallow nor wrap it)."""
        beating, self._beating = self._beating, None
        if beating is not None:
            await beating.aclose()

    def __aiter__(self) -> AsyncIterator[ResponseStreamEvent]:
        return self._require("iterating the stream").__aiter__()

    def text_deltas(self) -> AsyncIterator[str]:
        """Iterate the output text as it arrives (see ``GuardedStream.text_deltas``).

        Example:
            ```python
            text = "".join([delta async for delta in stream.text_deltas()])
            ```
        """
        return self._require("text_deltas()").text_deltas()

    async def get_final_response(self) -> Response:
        """Read to the end and return the final ``Response`` (see ``GuardedStream``).

        Example:
            ```python
            return (await stream.get_final_response()).output_text
            ```
        """
        return await self._require("get_final_response()").get_final_response()

    async def cancel(self) -> CancelReceipt:
        """Stop now: close the stream and cancel the response on the server, within grace.

        Example:
            ```python
            receipt = await stream.cancel()
            ```
        """
        return await self._require("cancel()").cancel()
