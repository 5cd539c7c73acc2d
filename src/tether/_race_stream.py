"""race_stream: the winner of a race, streamed live from its first event."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, final

import anyio

from ._errors import RaceFailed
from ._race import prepare_race
from ._stream import TextDeltas

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from types import TracebackType

    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import StreamOutcome
    from ._race import Contestant, Race, Stagger
    from ._race_records import RaceResult, Win
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

    def __init__(self, engine: Race) -> None:
        self._engine = engine
        self._entered = False
        self._attempts: contextlib.AsyncExitStack | None = None  # the race's task group
        self._winner: Contestant | None = None
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
        return self._won().guard.response_id

    @property
    def outcome(self) -> StreamOutcome:
        """The winner's guarded-stream outcome, once the block has exited."""
        return self._won().guard.require_outcome()

    @property
    def result(self) -> RaceResult:
        """The whole race, once the ``async with`` block has exited.

        Raises:
            RuntimeError: The block has not exited yet.
        """
        if self._result is None:
            raise RuntimeError("the race's result is known once the `async with` block has exited")
        return self._result

    def _won(self) -> Contestant:
        if self._winner is None:
            raise RuntimeError("the winner is known inside the `async with race_stream(...)` block")
        return self._winner

    async def __aenter__(self) -> RaceStream:
        if self._entered:
            raise RuntimeError("a race stream can be entered only once")
        self._entered = True
        engine = self._engine
        try:
            async with contextlib.AsyncExitStack() as stack:
                engine.start(await stack.enter_async_context(anyio.create_task_group()))
                await engine.decision.wait()
                winner = engine.winner
                if engine.crash is None and winner is not None and winner.state != "failed":
                    # A live winner: the attempts go on (the winner read by the body, the
                    # losers cancelling) until the block exits.
                    self._attempts = stack.pop_all()
                    self._winner = winner
                    return self
            engine.result()  # every attempt is over and nothing won: raises RaceFailed
        except BaseException as exc:
            engine.ended(None, exc)
            raise
        raise AssertionError("unreachable: a race with no winner raises")  # pragma: no cover

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        winner = self._won()
        engine = self._engine
        if winner.release is not None:  # the winner is parked in its task while we read it
            guard = winner.guard
            await guard.stop(guard.reason_for(exc))  # the one cleanup path (close, cancel)
            winner.release.set()
        attempts, self._attempts = self._attempts, None
        assert attempts is not None
        try:
            # The caller's exception is not handed to the task group, which would wrap it in
            # an ExceptionGroup: it propagates by itself once the attempts are over.
            await attempts.aclose()
        except BaseException as raised:
            cancelled = isinstance(raised, anyio.get_cancelled_exc_class())
            if engine.crash is None and not (cancelled and exc is not None):
                engine.ended(None, raised)
                raise
        try:
            self._result = engine.result()
        except RaceFailed as failed:  # never instead of the exception that ended the block
            engine.ended(None, failed)
            return
        except BaseException as crash:  # a bug in the race (the predicate...): raised as is
            engine.ended(None, crash)
            raise
        engine.ended(self._result, exc)

    def __aiter__(self) -> RaceStream:
        return self

    async def __anext__(self) -> ResponseStreamEvent:
        slot = self._won()
        if slot.events:
            return slot.events.popleft()
        return await slot.guard.__anext__()

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
        return await self._won().guard.read_to_end()


def race_stream(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: Win = "first_token",
    stagger: Stagger = None,
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
        win: ``"first_token"`` (default), ``"first_completed"`` or a predicate on the
            final response (with the last two, the winner's events are all replayed).
        stagger: ``None``, seconds, or [`adaptive`][tether.adaptive] (see ``race``).
        grace: Seconds each server-side cancel may take (default: the scope's).
        max_concurrency: With a client: at most this many attempts in flight at once.

    Returns:
        A [`RaceStream`][tether.races.RaceStream], to use as ``async with``.

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
        prepare_race(client_or_scope, requests, win, stagger, grace, max_concurrency, handover=True)
    )
