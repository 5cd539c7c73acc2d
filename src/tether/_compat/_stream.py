# pyright: reportPrivateUsage=false
# This package is tether's one seam into other libraries' private objects: each one read here
# has a Protocol of its shape, an upstream reference, and a test in tests/test_compat.py.
"""The SDK's ``AsyncStream`` internals, and the cause of a cancellation (anyio's, trio's)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import anyio

from ._pool import close_interrupted, finish_interrupted_close
from ._sdk import conforms

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from types import AsyncGeneratorType, FrameType

__all__ = [
    "cancel_cause",
    "close_sdk_stream",
    "drain_sdk_stream",
    "is_multiplexed",
    "sdk_inner_generator",
    "sdk_next",
    "sdk_stream_released",
]

_DRAIN_LIMIT = 10_000  # events still buffered after a close, at most
_INNER_LOCAL = "iterator"
"""The local of ``AsyncStream.__stream__`` holding ``self._iter_events()`` (openai
``_streaming.py``, ``AsyncStream.__stream__``: ``iterator = self._iter_events()``)."""


@runtime_checkable
class _AsyncStream(Protocol):
    """``openai._streaming.AsyncStream`` (``__init__``: ``self._iterator = self.__stream__()``)."""

    _iterator: AsyncGeneratorType[Any, None]


def _iterator_of(stream: object) -> AsyncGeneratorType[Any, None] | None:
    return stream._iterator if conforms(stream, _AsyncStream) else None


async def close_sdk_stream(stream: Any) -> None:
    """Close an SDK ``AsyncStream``: releases its connection (``close()``: 2.x and 3.x).

    It also finishes a close that a native cancellation interrupted earlier
    (`finish_interrupted_close`). tether calls it on the stop path, in a task of its own
    (``run_critical``), where no native cancellation lands.
    """
    with contextlib.suppress(Exception):  # the connection is dropped either way
        await stream.close()
    await finish_interrupted_close(stream)


async def drain_sdk_stream(stream: Any, inner: Any = None) -> None:
    """Finalise a closed SDK stream's chain of async generators.

    ``AsyncStream.close()`` releases the connection but leaves the SDK's nested generators
    (``__stream__`` -> ``_iter_events`` -> the decoder -> httpx -> httpcore) suspended, to be
    garbage-collected half-run (trio warns about each). Reading on once, in an
    already-cancelled scope, makes the innermost read raise (the closed transport on
    HTTP/1.1, the cancellation at its first checkpoint on HTTP/2, where a read after close
    would block), and the exception finishes every layer on its way out. Buffered events are
    discarded. Never waits. A generator that has already ended (``ag_frame`` is ``None``:
    read to its end, or closed) is skipped: cancelling a scope is not free on asyncio (anyio
    formats the task's repr for the cancel message).
    """
    for iterator in (_iterator_of(stream), inner):
        if iterator is None or getattr(iterator, "ag_frame", True) is None:
            continue
        with anyio.CancelScope() as scope, contextlib.suppress(Exception):
            scope.cancel()
            for _ in range(_DRAIN_LIMIT):
                await iterator.__anext__()


def sdk_stream_released(stream: Any) -> bool:
    """Whether an SDK stream's HTTP response is closed and its connection back in its pool.

    The SDK closes the response when its event generator ends (openai ``_streaming.py``,
    ``AsyncStream.__stream__``'s ``finally``; public: ``AsyncStream.response``, httpx's
    ``Response.is_closed``); a close that a native cancellation cut short
    (`close_interrupted`) does not count. Closing such a stream again does not wait.
    """
    response = getattr(stream, "response", None)
    return bool(getattr(response, "is_closed", False)) and not close_interrupted(stream)


def is_multiplexed(stream: Any) -> bool:
    """Whether an SDK stream's response came over HTTP/2 (where a read after close blocks)."""
    return getattr(getattr(stream, "response", None), "http_version", "") == "HTTP/2"


def sdk_next(stream: Any) -> Callable[[], Awaitable[Any]]:
    """The next-event coroutine of an SDK ``AsyncStream``, one call shallower.

    ``AsyncStream.__anext__`` only awaits its ``_iterator``'s (openai ``_streaming.py``,
    ``AsyncStream.__anext__``, 2.x and 3.x): on the hot path, tether awaits that one
    directly (one coroutine less per event).
    """
    iterator = _iterator_of(stream)
    return stream.__anext__ if iterator is None else iterator.__anext__


def sdk_inner_generator(stream: Any) -> AsyncGenerator[Any] | None:
    """The generator the SDK's event generator reads from, once it has started.

    When the SDK raises mid-stream (an error event with a nested ``error``), its outer
    generator ends but this one stays suspended; keep it to finalise it on close. Read from
    the suspended frame of ``AsyncStream.__stream__`` (its local ``iterator``): the SDK
    keeps no other reference to it.
    """
    iterator = _iterator_of(stream)
    frame: FrameType | None = None if iterator is None else iterator.ag_frame
    inner: Any = None if frame is None else frame.f_locals.get(_INNER_LOCAL)
    return inner


_ANYIO_DEADLINE = "deadline exceeded"
"""anyio's asyncio backend cancels a scope whose deadline passed with this message
(anyio ``_backends/_asyncio.py``, ``CancelScope._timeout``:
``self.cancel("deadline exceeded")``); ``CancelScope.cancel`` makes the message
``Cancelled via cancel scope <id>; reason: deadline exceeded``."""


def cancel_cause(exc: BaseException) -> Literal["deadline", "cancelled"]:
    """Tell a deadline from an explicit cancel, from the cancellation exception itself.

    trio's ``Cancelled`` carries ``source="deadline"`` (trio ``_core/_exceptions.py``,
    ``Cancelled.source``; set by ``_core/_run.py``, ``CancelReason(source="deadline")``); anyio's asyncio backend puts
    ``reason: deadline exceeded`` in the ``CancelledError``'s message (`_ANYIO_DEADLINE`).
    """
    if getattr(exc, "source", None) == "deadline" or _ANYIO_DEADLINE in str(exc):
        return "deadline"
    return "cancelled"
