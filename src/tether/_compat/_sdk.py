"""The one seam between tether and the installed ``openai`` SDK (2.x on httpx, 3.x on httpx2).

Everything that differs between the two majors, or that reaches into the SDK's objects,
lives here, so the rest of tether is written against one surface.
"""

from __future__ import annotations

import contextlib
import importlib
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio
import openai
from openai import AsyncOpenAI, OpenAI

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

__all__ = [
    "OPENAI_MAJOR",
    "STREAM_CONNECTION_ERRORS",
    "cancel_cause",
    "check_async_client",
    "close_sdk_stream",
    "drain_sdk_stream",
    "is_multiplexed",
    "lean_target",
    "on_request_sent",
    "pool_limits",
    "sdk_inner_generator",
    "sdk_next",
]

OPENAI_MAJOR = int(openai.__version__.split(".", 1)[0])


HTTP: Any = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
"""The HTTP library the installed SDK is built on (httpx2 for 3.x, httpx for 2.x)."""


def _stream_connection_errors() -> tuple[type[BaseException], ...]:
    if OPENAI_MAJOR >= 3:
        return (openai.APIConnectionError,)
    # 2.x wraps transport errors of the request, not those raised while reading the stream.
    return (openai.APIConnectionError, HTTP.TransportError)


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


async def close_sdk_stream(stream: Any) -> None:
    """Close an SDK ``AsyncStream``: releases its connection (``close()``: 2.x and 3.x).

    It also finishes a close that a native cancellation interrupted earlier
    (`_finish_interrupted_close`). tether calls it on the stop path, in a task of its own
    (``run_critical``), where no native cancellation lands.
    """
    with contextlib.suppress(Exception):  # the connection is dropped either way
        await stream.close()
    await _finish_interrupted_close(stream)


async def _finish_interrupted_close(stream: Any) -> None:
    """Finish the close of a response that a native cancellation interrupted.

    httpcore's ``PoolByteStream.aclose`` (and the HTTP/1.1 stream's under it) mark
    themselves closed *before* their cleanup awaits, under an anyio shield that a native
    ``Task.cancel()`` goes through. An ``asyncio.timeout`` (a ``TaskGroup``, a ``wait_for``)
    landing there, as the reader's read reaches the end of the body, leaves the request in
    the pool for good and its connection checked out (encode/httpcore#1115,
    encode/httpx#3782, open upstream). On httpcore 1.x (openai 2.x) the close's lock
    awaits even when it is free: measured, 64 of 96 streams resumed under an
    ``asyncio.timeout``; httpcore2 (openai 3.x) acquires a free lock without awaiting, so
    only a close that also shuts the connection has an await to land on. When the
    response's request is still in its pool although its stream says closed, mark both
    open again and close once more: httpcore's own cleanup then runs to its end.
    """
    response_stream = getattr(getattr(stream, "response", None), "stream", None)
    pool_stream: Any = getattr(getattr(response_stream, "_stream", None), "_httpcore_stream", None)
    pool: Any = getattr(pool_stream, "_pool", None)
    requests = getattr(pool, "_requests", None)
    if (
        requests is None
        or not getattr(pool_stream, "_closed", False)
        or getattr(pool_stream, "_pool_request", None) not in requests
    ):
        return
    inner: Any = getattr(pool_stream, "_stream", None)
    if getattr(inner, "_closed", False):
        inner._closed = False
    pool_stream._closed = False
    with contextlib.suppress(Exception):
        await pool_stream.aclose()


async def drain_sdk_stream(stream: Any, inner: Any = None) -> None:
    """Finalise a closed SDK stream's chain of async generators.

    ``AsyncStream.close()`` releases the connection but leaves the SDK's nested generators
    (``__stream__`` -> ``_iter_events`` -> the decoder -> httpx -> httpcore) suspended, to be
    garbage-collected half-run (trio warns about each). Reading on once, in an
    already-cancelled scope, makes the innermost read raise (the closed transport on
    HTTP/1.1, the cancellation at its first checkpoint on HTTP/2, where a read after close
    would block), and the exception finishes every layer on its way out. Buffered events are
    discarded. Never waits.
    """
    for iterator in (getattr(stream, "_iterator", None), inner):
        if iterator is None:
            continue
        with anyio.CancelScope() as scope, contextlib.suppress(Exception):
            scope.cancel()
            for _ in range(_DRAIN_LIMIT):
                await iterator.__anext__()


def is_multiplexed(stream: Any) -> bool:
    """Whether an SDK stream's response came over HTTP/2 (where a read after close blocks)."""
    return getattr(getattr(stream, "response", None), "http_version", "") == "HTTP/2"


def sdk_next(stream: Any) -> Callable[[], Awaitable[Any]]:
    """The next-event coroutine of an SDK ``AsyncStream``, one call shallower.

    ``AsyncStream.__anext__`` only awaits its ``_iterator``'s (2.x and 3.x): on the hot path,
    tether awaits that one directly (one coroutine less per event).
    """
    iterator = getattr(stream, "_iterator", None)
    step = getattr(iterator, "__anext__", None)
    return step if step is not None else stream.__anext__


def sdk_inner_generator(stream: Any) -> Any:
    """The generator the SDK's event generator reads from, once it has started.

    When the SDK raises mid-stream (an error event with a nested ``error``), its outer
    generator ends but this one stays suspended; keep it to finalise it on close.
    """
    frame = getattr(getattr(stream, "_iterator", None), "ag_frame", None)
    return None if frame is None else frame.f_locals.get("iterator")


def cancel_cause(exc: BaseException) -> Literal["deadline", "cancelled"]:
    """Tell a deadline from an explicit cancel, from the cancellation exception itself.

    trio's ``Cancelled`` carries ``source="deadline"``; anyio's asyncio backend puts
    ``reason: deadline exceeded`` in the ``CancelledError``'s message.
    """
    if getattr(exc, "source", None) == "deadline" or "deadline exceeded" in str(exc):
        return "deadline"
    return "cancelled"


def pool_limits(client: AsyncOpenAI) -> tuple[int, int] | None:
    """``(max_connections, max_keepalive_connections)`` of *client*'s connection pool.

    Read-only, from the HTTP client's default transport (httpx and httpx2 keep them on the
    httpcore pool; ``None`` limits are stored as ``sys.maxsize``). None where the client's
    HTTP stack does not say: a custom transport, or an HTTP client that is not httpx's.
    On openai 2.x (httpx, httpcore 1.x) also None: that pool still probes every idle
    connection on each assignment pass (encode/httpcore#928), so the more requests it
    holds, the dearer each one; httpcore2's pass is linear.
    """
    if OPENAI_MAJOR < 3:
        return None
    pool: Any = getattr(
        getattr(getattr(client, "_client", None), "_transport", None), "_pool", None
    )
    connections = getattr(pool, "_max_connections", None)
    keepalive = getattr(pool, "_max_keepalive_connections", None)
    if not isinstance(connections, int) or not isinstance(keepalive, int):
        return None
    return connections, keepalive


# -- knowing when a request has left ----------------------------------------------------------
#
# The open must not be shielded while a request only waits (for a pooled connection, say):
# cancelled there, it is simply never sent. It must be shielded from the moment its headers
# go out. The HTTP stack says when through httpcore's per-request ``trace`` extension; the
# SDK gives no way to set request extensions, so a request hook on the client's HTTP client
# (installed once per HTTP client) adds it to the requests of the task that asked for it.

_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("tether_on_sent", default=None)
_hooked: weakref.WeakSet[Any] = weakref.WeakSet()
_SENT = "send_request_headers.started"  # http11.… and http2.…


async def _request_hook(request: Any) -> None:
    callback = _on_sent.get()
    if callback is None:
        return
    previous = request.extensions.get("trace")

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith(_SENT):
            callback()
        if previous is not None:
            result = previous(name, info)
            if hasattr(result, "__await__"):
                await result

    request.extensions = {**request.extensions, "trace": trace}


def _hook(client: AsyncOpenAI) -> bool:
    http: Any = getattr(client, "_client", None)  # the SDK's HTTP client (no public accessor)
    if http is None or not hasattr(http, "event_hooks"):
        return False
    if http not in _hooked:
        hooks = dict(http.event_hooks)
        hooks["request"] = [*hooks.get("request", []), _request_hook]
        http.event_hooks = hooks
        _hooked.add(http)
    return True


@contextlib.contextmanager
def on_request_sent(client: AsyncOpenAI, callback: Callable[[], None]) -> Generator[None]:
    """Call *callback* when a request made in this block starts sending its headers.

    Where the client's HTTP stack cannot say (a custom transport), *callback* is called at
    once: the request is then treated as sent from the start, the safe side.
    """
    if not _hook(client):
        callback()
        yield
        return
    token = _on_sent.set(callback)
    try:
        yield
    finally:
        _on_sent.reset(token)


# -- the lean stop path -------------------------------------------------------------------------
#
# A cancel through the SDK parses the whole ``Response`` into models, builds its request
# through the SDK's machinery and, through a client copy, recomputes the platform headers:
# on a stop that costs more than the POST itself. tether sends its stop requests itself,
# through the client's own HTTP client, with the headers of the request that opened the
# stream (auth, organization, project, user agent, the caller's own extra headers). Only for
# clients it can mirror: a plain ``AsyncOpenAI`` without default query parameters (Azure's
# deployments and api-version, a subclass's own auth: the SDK path).

_NOT_MIRRORED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "connection",
        "idempotency-key",
        "x-stainless-retry-count",
        "x-stainless-read-timeout",
        "x-stainless-timeout",
    }
)


class LeanTarget:
    """Where and how tether sends its own stop requests for one stream."""

    __slots__ = ("base_url", "client", "headers", "http")

    def __init__(self, client: AsyncOpenAI, http: Any, base_url: str, headers: dict[str, str]):
        self.client = client
        self.http = http
        self.base_url = base_url
        self.headers = headers

    async def request(self, method: str, path: str) -> dict[str, Any]:
        """Send *method* to ``base_url + path``; the JSON body, or the SDK's own errors.

        Raises what the SDK would: ``APIStatusError`` subclasses on an error status
        (``NotFoundError``, ``RateLimitError``, ...), ``APITimeoutError`` and
        ``APIConnectionError`` when the request did not get through.
        """
        url = self.base_url + path
        try:
            response = await self.http.request(method, url, headers=self.headers)
        except HTTP.TimeoutException:
            raise openai.APITimeoutError(request=HTTP.Request(method, url)) from None
        except HTTP.TransportError as exc:
            raise openai.APIConnectionError(request=HTTP.Request(method, url)) from exc
        if response.is_success:
            body: Any = response.json()
            return cast("dict[str, Any]", body) if isinstance(body, dict) else {}
        raise self.client._make_status_error_from_response(response)  # pyright: ignore[reportPrivateUsage]


def lean_target(client: AsyncOpenAI, stream: Any) -> LeanTarget | None:
    """The lean stop path for a stream opened through *client*, or None (use the SDK's)."""
    if type(client) is not AsyncOpenAI or client._custom_query:  # pyright: ignore[reportPrivateUsage]
        return None
    http: Any = getattr(client, "_client", None)
    request: Any = getattr(getattr(stream, "response", None), "request", None)
    if http is None or request is None or not hasattr(http, "request"):
        return None
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_MIRRORED}
    headers["accept"] = "application/json"
    return LeanTarget(client, http, str(client.base_url), headers)
