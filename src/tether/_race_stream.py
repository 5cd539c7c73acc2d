"""race_stream: the winner of a race, streamed live from its first event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import anyio

from ._errors import RaceFailed
from ._race import _prepare, _Race, _Slot, _Stagger, _Win, first_token
from ._stream import TextDeltas

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup
    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import Outcome, RaceResult
    from ._scope import Scope

__all__ = ["RaceStream", "race_stream"]


@final
class RaceStream:
    """The winner of a race, streamed live: made by [`race_stream`][tether.race_stream].

    Entering it runs the race until a winner is known; iterating it yields the winner's
    events from its very first one (``response.created``, sequence number 0): the events it
    produced before winning are replayed, then the live ones follow. Leaving the block early
    (``break``, an exception, a cancellation) cancels the winner on the server too.

    Example:
        ```python
        async with tether.race_stream(client, [a, b], stagger=0.8) as stream:
            print("winner:", stream.winner_index, stream.response_id)
            async for text in stream.text_deltas():
                print(text, end="")
        print(stream.result.losers)
        ```
    """

    def __init__(self, engine: _Race) -> None:
        self._engine = engine
        self._tg: TaskGroup | None = None
        self._winner: _Slot | None = None
        self._result: RaceResult | None = None

    @property
    def winner_index(self) -> int:
        """The index, in ``requests``, of the attempt that won."""
        return self._won().index

    @property
    def model(self) -> str | None:
        """The winner's model."""
        return self._won().model

    @property
    def response_id(self) -> str | None:
        """The winner's response id."""
        return self._won().stream.response_id

    @property
    def outcome(self) -> Outcome:
        """The winner's guarded-stream outcome, once the block has exited."""
        return self._won().stream.require_outcome()

    @property
    def result(self) -> RaceResult:
        """The whole race, once the ``async with`` block has exited.

        Raises:
            RuntimeError: The block has not exited yet.
        """
        if self._result is None:
            raise RuntimeError("the race's result is known once the `async with` block has exited")
        return self._result

    def _won(self) -> _Slot:
        if self._winner is None:
            raise RuntimeError("the winner is known inside the `async with race_stream(...)` block")
        return self._winner

    async def __aenter__(self) -> RaceStream:
        if self._tg is not None:
            raise RuntimeError("a race stream can be entered only once")
        engine = self._engine
        tg = self._tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            engine.start(tg)
            await engine.decision.wait()
        except BaseException as exc:
            await self._close_group(exc)
            raise
        if engine.crash is not None or engine.winner is None or engine.winner.state == "failed":
            await self._close_group(None)
            engine.result()  # raises RaceFailed
        self._winner = engine.winner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slot = self._won()
        if slot.release is not None:  # the winner is parked in its task while we read it
            stream = slot.stream
            await stream.stop(stream.reason_for(exc))  # the one cleanup path (close, cancel)
            slot.release.set()
        await self._close_group(exc)
        try:
            self._result = self._engine.result()
        except RaceFailed:  # never instead of the exception that ended the block
            self._result = None

    async def _close_group(self, exc: BaseException | None) -> None:
        """Wait for every attempt (losers cancelling, in parallel), then raise what must be.

        The caller's exception is never handed to the task group, which would wrap it in an
        ExceptionGroup: it propagates by itself. A crash inside the race is raised instead.
        """
        assert self._tg is not None
        engine = self._engine
        try:
            await self._tg.__aexit__(None, None, None)
        except BaseException as raised:
            cancelled = anyio.get_cancelled_exc_class()
            if engine.crash is None and isinstance(raised, cancelled) and exc is not None:
                return  # the caller's exception goes on; the cancellation is level-triggered
            if engine.crash is None:
                raise
        if engine.crash is not None:
            raise engine.crash

    def __aiter__(self) -> RaceStream:
        return self

    async def __anext__(self) -> ResponseStreamEvent:
        slot = self._won()
        if slot.events:
            return slot.events.popleft()
        return await slot.stream.__anext__()

    def text_deltas(self) -> AsyncIterator[str]:
        """Iterate the winner's output text (``response.output_text.delta`` deltas).

        Example:
            ```python
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
            ```
        """
        return TextDeltas(self)

    async def get_final_response(self) -> Response:
        """Read the winner to its end and return its final ``Response``.

        Raises:
            ResponseNotCompleted: The winner failed or was stopped.

        Example:
            ```python
            async with tether.race_stream(client, requests) as stream:
                response = await stream.get_final_response()
            ```
        """
        async for _ in self:
            pass
        return await self._won().stream.read_to_end()


def race_stream(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: _Win = first_token,
    stagger: _Stagger = None,
    grace: float | None = None,
    max_concurrency: int | None = None,
) -> RaceStream:
    """Race several requests and stream the winner's events live, from the moment it wins.

    Like [`race`][tether.race], but the ``async with`` body reads the winner as it streams.
    With ``first_token`` (the default) the race is decided by the first output token: the
    losers are cancelled on the server, concurrently, while you read; what the winner sent
    before winning is replayed first, so its events arrive from ``response.created`` on,
    with no gap. Leaving the block early cancels the winner on the server as well, and
    the block exits once every loser is confirmed cancelled (or out of grace).

    Args:
        client_or_scope: An ``openai.AsyncOpenAI`` or a [`Scope`][tether.Scope].
        requests: ``responses.create`` kwargs, one dict per attempt (see ``race``).
        win: [`first_token`][tether.first_token] (default), ``first_completed`` or a
            predicate on the final response (the winner's events are then all replayed).
        stagger: ``None``, seconds, or [`adaptive`][tether.adaptive] (see ``race``).
        grace: Seconds each server-side cancel may take (default: the scope's).
        max_concurrency: With a client: at most this many attempts in flight at once.

    Returns:
        A [`RaceStream`][tether.RaceStream], to use as ``async with``.

    Raises:
        RaceFailed: (on entry) No attempt won.
        TypeError: A bad argument type. ValueError: an argument out of range. Both are
            raised by this call, before any request is sent.

    Example:
        ```python
        async with tether.race_stream(client, [a, b, c], stagger=0.8) as stream:
            async for event in stream:      # the winner's events, from sequence_number 0
                handle(event)
        ```

    Added in version 0.1.
    """
    return RaceStream(
        _prepare(client_or_scope, requests, win, stagger, grace, max_concurrency, keep_events=True)
    )
