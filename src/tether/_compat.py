"""The one seam between tether and the installed ``openai`` SDK (2.x on httpx, 3.x on httpx2).

Everything that differs between the two majors, or that reaches into the SDK's objects,
lives here, so the rest of tether is written against one surface.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Literal

import openai
from openai import AsyncOpenAI, OpenAI

__all__ = [
    "OPENAI_MAJOR",
    "STREAM_CONNECTION_ERRORS",
    "aclose_sdk_stream",
    "cancel_cause",
    "check_async_client",
    "close_sdk_stream",
    "sdk_inner_generator",
]

OPENAI_MAJOR = int(openai.__version__.split(".", 1)[0])


def _stream_connection_errors() -> tuple[type[BaseException], ...]:
    if OPENAI_MAJOR >= 3:
        return (openai.APIConnectionError,)
    # 2.x wraps transport errors of the request, not those raised while reading the stream.
    transport_error: type[BaseException] = importlib.import_module("httpx").TransportError
    return (openai.APIConnectionError, transport_error)


STREAM_CONNECTION_ERRORS = _stream_connection_errors()
"""What a lost connection raises while a stream is read, on the installed SDK."""
_DRAIN_LIMIT = 10_000  # events still buffered after a close, at most


def check_async_client(client: object, *, argument: str = "client") -> AsyncOpenAI:
    """Return *client* if it is an ``openai.AsyncOpenAI`` (Azure included), else raise TypeError."""
    if isinstance(client, AsyncOpenAI):
        return client
    if isinstance(client, OpenAI):
        raise TypeError(
            f"{argument} must be an openai.AsyncOpenAI, got a sync {type(client).__name__}: "
            "use tether.sync for the sync client"
        )
    raise TypeError(f"{argument} must be an openai.AsyncOpenAI, got {client!r}")


async def aclose_sdk_stream(stream: Any, inner: Any = None) -> None:
    """Close an SDK ``AsyncStream`` and finalise its chain of async generators.

    ``AsyncStream.close()`` (2.x and 3.x; ``aclose()`` is 3.x only) releases the connection but
    leaves the SDK's nested generators (``__stream__`` -> ``_iter_events`` -> the decoder ->
    httpx) suspended, to be garbage-collected half-run (trio warns about each). Reading on
    after the close makes the closed transport raise through every layer, which finishes them
    all; whatever was still buffered is discarded.
    """
    await stream.close()
    for iterator in (getattr(stream, "_iterator", None), inner):
        if iterator is None:
            continue
        with contextlib.suppress(Exception):
            for _ in range(_DRAIN_LIMIT):
                await iterator.__anext__()


def sdk_inner_generator(stream: Any) -> Any:
    """The generator the SDK's event generator reads from, once it has started.

    When the SDK raises mid-stream (an error event with a nested ``error``), its outer
    generator ends but this one stays suspended; keep it to finalise it on close.
    """
    frame = getattr(getattr(stream, "_iterator", None), "ag_frame", None)
    return None if frame is None else frame.f_locals.get("iterator")


def close_sdk_stream(stream: Any) -> None:
    """Close a sync SDK ``Stream`` (same on 2.x and 3.x)."""
    iterator = getattr(stream, "_iterator", None)
    close = getattr(iterator, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # "generator already executing"
            close()
    stream.close()


def cancel_cause(exc: BaseException) -> Literal["deadline", "cancelled"]:
    """Tell a deadline from an explicit cancel, from the cancellation exception itself.

    trio's ``Cancelled`` carries ``source="deadline"``; anyio's asyncio backend puts
    ``reason: deadline exceeded`` in the ``CancelledError``'s message.
    """
    if getattr(exc, "source", None) == "deadline" or "deadline exceeded" in str(exc):
        return "deadline"
    return "cancelled"
