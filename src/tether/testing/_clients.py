"""The SDK clients the emulator hands out: its api key, HTTP/1.1 or HTTP/2, one TLS context."""

from __future__ import annotations

import functools
import ssl
from typing import Any

__all__ = ["API_KEY", "http_client_for", "no_http_client", "tls_context", "wants_http2"]

API_KEY = "sk-emulator"
"""The api key of the emulator's clients when it checks none."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client the emulator makes (never used: it speaks plain
    HTTP on loopback), instead of one each: loading the CA bundle costs ~60 ms a client."""
    return ssl.create_default_context()


def sdk_default_http_client(*, sync: bool) -> Any:
    """The HTTP client the SDK makes when given none (closed when garbage-collected, like
    the SDK's), on the shared TLS context."""
    from .._compat import sdk_http_client

    return sdk_http_client(sync=sync, verify=tls_context())


def no_http_client(kwargs: dict[str, Any]) -> None:
    if kwargs.get("http_client") is not None:
        raise ValueError(
            "http2=True builds the client's HTTP client itself; "
            f"got http_client={kwargs['http_client']!r} too"
        )


def http_client_for(given: Any, *, http2: bool, sync: bool) -> Any:
    """The HTTP client of an emulator's SDK client: HTTP/2 (h2c), the caller's *given*, or
    the SDK's default on the shared TLS context."""
    import openai

    if http2:
        verify = tls_context()
        if sync:
            return openai.DefaultHttpxClient(http1=False, http2=True, verify=verify)
        return openai.DefaultAsyncHttpxClient(http1=False, http2=True, verify=verify)
    return given if given is not None else sdk_default_http_client(sync=sync)


def wants_http2(requested: bool | None, *, serves_http2: bool, kwargs: dict[str, Any]) -> bool:
    """Whether a client of the emulator speaks HTTP/2: *requested*, or by default whether the
    emulator serves it (and the caller gave no ``http_client``).

    Raises:
        ValueError: HTTP/2 requested from an emulator without it, or with an ``http_client``.
    """
    if requested is None:  # an http_client of the caller's own is used as it is
        return serves_http2 and kwargs.get("http_client") is None
    if requested and not serves_http2:
        raise ValueError(
            "http2=True needs an emulator that serves HTTP/2: "
            "ResponsesEmulator(http2=True), got one serving HTTP/1.1 only"
        )
    if requested:
        no_http_client(kwargs)
    return requested
