"""SyncTemporalStream: a guarded stream in a sync Temporal activity, checkpointed like an async one.

Made by ``tether.temporal.guarded_stream`` given an ``openai.OpenAI`` in a sync activity (a
plain ``def``, run in a thread of the worker's ``activity_executor``). It is a
``tether.sync.GuardedStream`` on a portal of its own (a ``tether.sync.Scope`` whose deadline
is the attempt's end), with the async twin's place in the attempt's heartbeat
(``_temporal_place.py``): the place is taken, chosen, followed and left on the portal's
loop, which also runs the beat loop. Heartbeats go out through the activity context's own
heartbeat, which temporalio makes thread-safe for sync activities.

Temporal cancels a sync activity by raising its ``CancelledError`` into the activity's
thread. Wherever it lands in the block, ``tether.sync`` stops the stream (as for Ctrl-C),
and the guard's ``handover`` (``NextAttempt``, reading the attempt's cancellation details
captured in this thread) decides as in an async activity, with one difference: a sync
activity's context has no Temporal client, so tether cannot ask whether Temporal holds a
checkpoint naming a response this attempt created; a graceful end (a worker shutdown, a
timeout) hands over only a response this attempt resumed, and cancels a new one. tether's
own steps around the stream run under ``activity.shield_thread_cancel_exception()``: a
cancel landing there is raised once they are done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import anyio
from temporalio import activity

from ._sync_stream import GuardedStream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import CancelReceipt, StreamOutcome
    from ._sync_scope import Scope
    from ._temporal_place import Place

__all__ = ["SyncTemporalStream"]

_WHAT = "tether.temporal.guarded_stream()"


@final
class SyncTemporalStream:
    """A guarded stream in a sync Temporal activity, checkpointed in its heartbeats.

    Made by [`tether.temporal.guarded_stream`][tether.temporal.guarded_stream] given an
    ``openai.OpenAI`` in a sync activity; use it as a context manager, as a
    [`tether.sync.GuardedStream`][tether.sync.GuardedStream] (its events, ``text_deltas()``,
    ``get_final_response()``, ``cancel()``, ``outcome``), with ``resumed`` and
    ``user_details`` as on [`TemporalStream`][tether.temporal.TemporalStream].

    Example:
        ```python
        @activity.defn
        def essay(prompt: str) -> str:
            with tether.temporal.guarded_stream(client, model="gpt-5", input=prompt) as s:
                return s.get_final_response().output_text
        ```
    """

    __slots__ = ("_beat_every", "_beating", "_place", "_scope", "_stream")

    def __init__(self, place: Place, scope: Scope, *, beat_every: float) -> None:
        self._place = place
        self._scope = scope
        self._beat_every = beat_every
        self._stream: GuardedStream | None = None
        self._beating: anyio.CancelScope | None = None  # the beat loop's, on the loop

    def __repr__(self) -> str:
        return f"<tether.temporal.SyncTemporalStream response_id={self.response_id!r}>"

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``with`` body runs."""
        return None if self._stream is None else self._stream.response_id

    @property
    def resumed(self) -> bool:
        """Whether this attempt resumed the response of a previous attempt's checkpoint."""
        return self._place.resumed

    @property
    def user_details(self) -> tuple[Any, ...]:
        """Your own heartbeat details, without tether's checkpoint (see
        [`TemporalStream.user_details`][tether.temporal.TemporalStream.user_details]).

        Example:
            ```python
            with tether.temporal.guarded_stream(client, model="m", input=p) as stream:
                done = stream.user_details  # () on a first attempt
            ```
        """
        return self._place.beats.user

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event handed to you."""
        return None if self._stream is None else self._stream.last_sequence_number

    @property
    def outcome(self) -> StreamOutcome:
        """How the stream ended, once the block exited (see ``tether.sync.GuardedStream``)."""
        return self._require("outcome").outcome

    def _require(self, what: str) -> GuardedStream:
        if self._stream is None:
            raise RuntimeError(f"{what} needs an open stream: use it inside `with`")
        return self._stream

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> SyncTemporalStream:
        scope = self._scope
        place = self._place
        scope.__enter__()
        stream: GuardedStream | None = None
        try:
            with activity.shield_thread_cancel_exception():
                scope.call(place.take)
                if place.beats.durable:  # the attempt stays alive while the stream opens
                    scope.spawn(self._keep_beating, _WHAT, self._prepare_beating)
            guard = scope.run(place.choose, _WHAT)  # a resume's check: a cancel stops it
            stream = GuardedStream(guard, scope, owns_scope=False)
            stream.__enter__()  # a cancel while it opens stops it, as Ctrl-C does
        except BaseException as exc:
            self._close(stream, exc)
            raise
        self._stream = stream
        try:
            with activity.shield_thread_cancel_exception():
                scope.call(place.follow, stream)  # the id goes out before the first event
        except BaseException as exc:  # a cancel held during the first beat: leave as the body
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stream = self._require("__exit__")
        # The stop waits for the server's cancel (bounded by grace) in any case: a cancel
        # raised meanwhile is held until the stream, its beats and its portal are closed.
        with activity.shield_thread_cancel_exception():
            try:
                stream.__exit__(exc_type, exc, tb)  # the guard asks NextAttempt, on the loop
            except BaseException as error:
                self._close(stream, error)
                raise
            self._close(stream, exc)

    def _close(self, stream: GuardedStream | None, exc: BaseException | None) -> None:
        """Stop the beat loop, send the last checkpoint, close the portal (once *stream*,
        if any, has closed): each step even if the one before it raised, a cancel raised
        into this thread only once they are done."""
        try:
            outcome = None if stream is None else stream.outcome
        except RuntimeError:  # the stop did not get to its end: say nothing new
            outcome = None
        scope = self._scope
        with activity.shield_thread_cancel_exception():
            try:
                scope.call(self._leave, stream, outcome)
            finally:
                scope.__exit__(None if exc is None else type(exc), exc, None)

    def _leave(self, stream: GuardedStream | None, outcome: StreamOutcome | None) -> None:
        """(On the loop.) No beat after this one but the last checkpoint's."""
        if self._beating is not None:
            self._beating.cancel()
        self._place.leave(stream, outcome)

    def _prepare_beating(self) -> None:
        self._beating = anyio.CancelScope()

    async def _keep_beating(self) -> None:
        """(On the loop.) The attempt's beat loop (``Heartbeats.keep``) until ``_leave``."""
        assert self._beating is not None
        await self._place.beats.keep(self._beat_every, self._beating)

    # ---------------------------------------------------------------- reading

    def __iter__(self) -> Iterator[ResponseStreamEvent]:
        return iter(self._require("iterating the stream"))

    def text_deltas(self) -> Iterator[str]:
        """Iterate the output text as it arrives (see ``tether.sync.GuardedStream``).

        Example:
            ```python
            text = "".join(stream.text_deltas())
            ```
        """
        return self._require("text_deltas()").text_deltas()

    def get_final_response(self) -> Response:
        """Read to the end and return the final ``Response``.

        Example:
            ```python
            return stream.get_final_response().output_text
            ```
        """
        return self._require("get_final_response()").get_final_response()

    def cancel(self) -> CancelReceipt:
        """Stop now: close the stream and cancel the response on the server, within grace.

        Example:
            ```python
            receipt = stream.cancel()
            ```
        """
        return self._require("cancel()").cancel()
