# pyright: reportPrivateUsage=false
# This package is tether's one seam into other libraries' private objects: each one read here
# has a Protocol of its shape, an upstream reference, and a test in tests/test_compat.py.
"""httpcore's connection pool, under httpx (openai 2.x) and httpx2 (openai 3.x).

Its limits and settings have no public accessor once the transport is built, and a close
interrupted by a native cancellation can only be finished from inside.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs

from ._sdk import OPENAI_MAJOR, conforms, sdk_http_client_of

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Mapping

    from openai import AsyncOpenAI

__all__ = [
    "PoolSettings",
    "close_interrupted",
    "finish_interrupted_close",
    "mounted_patterns",
    "pool_limits",
    "pool_settings",
]


@runtime_checkable
class _Pool(Protocol):
    """httpcore ``_async/connection_pool.py`` (``_sync/`` alike), ``AsyncConnectionPool.__init__``.

    ``None`` limits are stored as ``sys.maxsize``.
    """

    _requests: list[Any]
    _max_connections: int
    _max_keepalive_connections: int
    _keepalive_expiry: float | None
    _ssl_context: ssl.SSLContext | None
    _http1: bool
    _http2: bool
    _retries: int
    _local_address: str | None
    _uds: str | None
    _socket_options: Iterable[Any] | None


@runtime_checkable
class _Transport(Protocol):
    """httpx ``_transports/default.py``, ``HTTPTransport`` / ``AsyncHTTPTransport.__init__``."""

    _pool: Any  # a ConnectionPool, or an HTTPProxy / SOCKSProxy (a pool subclass)


@runtime_checkable
class _HttpClient(Protocol):
    """httpx ``_client.py``, ``BaseClient`` / ``Client.__init__``."""

    _transport: Any
    _mounts: Mapping[Any, Any]


@runtime_checkable
class _BoundStream(Protocol):
    """httpx ``_client.py``, ``BoundAsyncStream`` (the response stream the client hands out)."""

    _stream: Any


@runtime_checkable
class _ResponseStream(Protocol):
    """httpx ``_transports/default.py``, ``AsyncResponseStream``."""

    _httpcore_stream: Any


@runtime_checkable
class _PoolByteStream(Protocol):
    """httpcore ``_async/connection_pool.py``, ``PoolByteStream``."""

    _stream: Any
    _pool_request: Any
    _pool: Any
    _closed: bool

    async def aclose(self) -> None: ...


@runtime_checkable
class _ClosableStream(Protocol):
    """httpcore ``_async/http11.py``, ``HTTP11ConnectionByteStream`` (``_closed``)."""

    _closed: bool


def _pool_of(http_client: object) -> _Pool | None:
    transport = http_client._transport if conforms(http_client, _HttpClient) else None
    pool = transport._pool if conforms(transport, _Transport) else None
    return pool if conforms(pool, _Pool) else None


def _pool_stream(stream: object) -> _PoolByteStream | None:
    response_stream = getattr(getattr(stream, "response", None), "stream", None)
    bound = response_stream._stream if conforms(response_stream, _BoundStream) else None
    pool_stream = bound._httpcore_stream if conforms(bound, _ResponseStream) else None
    return pool_stream if conforms(pool_stream, _PoolByteStream) else None


async def finish_interrupted_close(stream: Any) -> None:
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
    pool_stream = _interrupted(stream)
    if pool_stream is None:
        return
    inner = pool_stream._stream
    if conforms(inner, _ClosableStream) and inner._closed:
        inner._closed = False
    pool_stream._closed = False
    with contextlib.suppress(Exception):
        await pool_stream.aclose()


def close_interrupted(stream: Any) -> bool:
    """Whether a close of *stream* (an SDK stream) was cut short: its pool stream says closed
    while its request is still in the pool (`finish_interrupted_close` finishes it)."""
    return _interrupted(stream) is not None


def _interrupted(stream: Any) -> _PoolByteStream | None:
    pool_stream = _pool_stream(stream)
    if pool_stream is None or not pool_stream._closed:
        return None
    pool = pool_stream._pool
    if not conforms(pool, _Pool) or pool_stream._pool_request not in pool._requests:
        return None
    return pool_stream


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
    try:
        pool = _pool_of(sdk_http_client_of(client))
    except TypeError:  # not the SDK's client shape: nothing to say
        return None
    if pool is None:
        return None
    return pool._max_connections, pool._max_keepalive_connections


@final
@attrs.frozen(kw_only=True)
class PoolSettings:
    """What an httpx ``HTTPTransport`` was built with, read back from its httpcore pool."""

    max_connections: int
    """``Limits.max_connections`` (``sys.maxsize`` for None)."""
    max_keepalive_connections: int
    """``Limits.max_keepalive_connections`` (``sys.maxsize`` for None)."""
    keepalive_expiry: float | None
    """``Limits.keepalive_expiry``."""
    transport_kwargs: dict[str, Any]
    """``verify``, ``http1``, ``http2``, ``retries``, ``local_address``, ``uds`` and
    ``socket_options`` for ``AsyncHTTPTransport``."""


def pool_settings(http_client: object) -> PoolSettings | None:
    """The settings of *http_client*'s default transport's pool; None if it has none (a
    custom transport, a proxy)."""
    pool = _pool_of(http_client)
    if pool is None or type(pool).__name__ != "ConnectionPool":
        return None
    return PoolSettings(
        max_connections=pool._max_connections,
        max_keepalive_connections=pool._max_keepalive_connections,
        keepalive_expiry=pool._keepalive_expiry,
        transport_kwargs={
            "verify": pool._ssl_context,
            "http1": pool._http1,
            "http2": pool._http2,
            "retries": pool._retries,
            "local_address": pool._local_address,
            "uds": pool._uds,
            "socket_options": pool._socket_options,
        },
    )


def ssl_context_of(http_client: object) -> ssl.SSLContext | None:
    """The TLS context of *http_client*'s default transport's pool, if it has one."""
    pool = _pool_of(http_client)
    return None if pool is None else pool._ssl_context


def mounted_patterns(http_client: object) -> set[object]:
    """The URL patterns an httpx client mounted transports on (proxies, ``mounts=``)."""
    if not conforms(http_client, _HttpClient):
        raise TypeError(f"not an httpx client of a known shape: {http_client!r}")
    return set(http_client._mounts)


def transport_of(http_client: object) -> object:
    """An httpx client's default transport (``Client._transport``)."""
    if not conforms(http_client, _HttpClient):
        raise TypeError(f"not an httpx client of a known shape: {http_client!r}")
    return http_client._transport
