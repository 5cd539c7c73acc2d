"""GuardedStream: the public face of one guarded response, and the functions that make one.

The protocol itself (open under a shield, read, stop, finish) is in ``_protocol.py``; this
module is the API users hold: an async context manager over a
[`ResponseGuard`][tether._protocol.ResponseGuard], with the names the docs teach.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, final

import anyio

from ._build import StreamOptions, build_guard, resume_guard
from ._errors import DeadlineExceeded
from ._protocol import ResponseGuard, set_stream_view
from ._validate import check_timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseStreamEvent

    from ._outcome import CancelReceipt, DetachedResponse, StreamOutcome
    from ._scope import Scope

__all__ = ["GuardedStream", "TextDeltas", "guarded_stream", "resume"]


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

    __slots__ = ("_deadline", "_deadline_scope", "_guard")

    def __init__(self, guard: ResponseGuard, deadline: float | None = None) -> None:
        self._guard = guard
        self._deadline = deadline
        self._deadline_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        guard = self._guard
        return f"<tether.GuardedStream response_id={guard.response_id!r} status={guard.status!r}>"

    @property
    def response_id(self) -> str | None:
        """The response's id: known once the ``async with`` body runs."""
        return self._guard.response_id

    @property
    def background(self) -> bool:
        """Whether the response runs in background mode (cancellable on the server)."""
        return self._guard.background

    @property
    def status(self) -> str | None:
        """The last status the stream reported (``queued``, ``in_progress``, ``completed``...)."""
        return self._guard.status

    @property
    def last_sequence_number(self) -> int | None:
        """The ``sequence_number`` of the last event received."""
        return self._guard.last_sequence_number

    @property
    def outcome(self) -> StreamOutcome:
        """How the stream ended; available once the ``async with`` block has exited.

        Raises:
            RuntimeError: The stream has not ended yet.
        """
        return self._guard.require_outcome()

    async def __aenter__(self) -> GuardedStream:
        if self._deadline is not None:
            scope = self._deadline_scope = anyio.CancelScope()
            scope.deadline = anyio.current_time() + self._deadline
            scope.__enter__()
        try:
            await self._guard.open()
        except BaseException as exc:
            self._leave_deadline(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._guard.close(exc)
        except BaseException as late:  # an interruption re-raised after the stop
            self._leave_deadline(late)
            raise
        self._leave_deadline(exc)

    def _leave_deadline(self, exc: BaseException | None) -> None:
        """Exit the ``deadline=`` scope; its own expiry becomes ``DeadlineExceeded``."""
        scope, self._deadline_scope = self._deadline_scope, None
        if scope is None:
            return
        caught = scope.__exit__(
            None if exc is None else type(exc), exc, None if exc is None else exc.__traceback__
        )
        if caught or (exc is None and scope.cancelled_caught):
            raise DeadlineExceeded(self._deadline or 0.0) from exc

    @property
    def model(self) -> str | None:
        """The model asked for."""
        return self._guard.model

    @property
    def deltas(self) -> int:
        """Output deltas received so far (roughly, tokens seen): a live count."""
        return self._guard.deltas

    def _check_readable(self, what: str) -> None:
        """Reading on after a ``break`` continues (the iterator protocol, as the SDK's own
        stream); after the end, or after the block, there is nothing to read: an error."""
        if self._guard.outcome is not None:
            raise RuntimeError(
                f"{what} after the stream's `async with` block exited: read it inside the block"
            )
        if self._guard.exhausted:
            raise RuntimeError(
                f"{what} again after the stream ended: its events were read once "
                "(the final response is get_final_response())"
            )

    def __aiter__(self) -> AsyncIterator[ResponseStreamEvent]:
        self._check_readable("iterating the stream")
        return self._guard  # `async for` reads the guard directly: nothing added per event

    async def __anext__(self) -> ResponseStreamEvent:
        if self._guard.outcome is not None:
            raise RuntimeError(
                "reading the stream after its `async with` block exited: read it inside the block"
            )
        return await self._guard.__anext__()

    def text_deltas(self) -> AsyncIterator[str]:
        """Iterate the output text as it arrives (the ``delta`` of ``response.output_text.delta``).

        Example:
            ```python
            async for text in stream.text_deltas():
                print(text, end="", flush=True)
            ```
        """
        self._check_readable("text_deltas()")
        return TextDeltas(self._guard)

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
        return await self._guard.read_to_end()

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
        return await self._guard.cancel()

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
        if self._guard.outcome is not None:
            raise RuntimeError(
                "detach() after the stream's `async with` block exited: the response was "
                "already stopped; detach inside the block"
            )
        return await self._guard.detach()


set_stream_view(GuardedStream)  # observers' live view of every guard (StreamEvent.Started.stream)


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


def guarded_stream(
    scope: Scope | AsyncOpenAI,
    *,
    background: bool = True,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
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
        deadline: Seconds for this stream's whole block, or ``None``: when it runs out the
            response is cancelled on the server, then ``DeadlineExceeded`` is raised (like
            a scope's deadline, for one stream).
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
    limit = check_timeout("deadline", deadline)
    return GuardedStream(
        build_guard(
            scope,
            StreamOptions(
                background=background,
                grace=grace,
                first_event_timeout=first_event_timeout,
                first_token_timeout=first_token_timeout,
                idle_timeout=idle_timeout,
                key=key,
            ),
            create_kwargs,
        ),
        limit,
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
    return GuardedStream(
        resume_guard(
            scope,
            handle,
            grace=grace,
            first_event_timeout=first_event_timeout,
            idle_timeout=idle_timeout,
        )
    )
