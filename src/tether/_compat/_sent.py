"""Knowing when a request has left: httpcore's ``trace`` extension, set by a request hook.

The open must not be shielded while a request only waits (for a pooled connection, say):
cancelled there, it is simply never sent. It must be shielded from the moment its headers
go out. The HTTP stack says when through httpcore's per-request ``trace`` extension
(httpcore ``_trace.py``, ``Trace``; events ``http11.send_request_headers.started`` and
``http2.send_request_headers.started``); the SDK gives no way to set request extensions,
so a request hook on the client's HTTP client (installed once per HTTP client) adds it to
the requests of the task that asked for it.
"""

from __future__ import annotations

import contextlib
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ._sdk import sdk_http_client_of

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from openai import AsyncOpenAI

__all__ = ["on_request_sent"]

_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("tether_on_sent", default=None)
_hooked: weakref.WeakSet[Any] = weakref.WeakSet()
SENT = "send_request_headers.started"
"""The end of the trace events a request's headers starting to go out raises (http11.… and
http2.…)."""


async def _request_hook(request: Any) -> None:
    callback = _on_sent.get()
    if callback is None:
        return
    previous = request.extensions.get("trace")

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith(SENT):
            callback()
        if previous is not None:
            result = previous(name, info)
            if hasattr(result, "__await__"):
                await result

    request.extensions = {**request.extensions, "trace": trace}


def _hook(client: AsyncOpenAI) -> bool:
    try:
        http: Any = sdk_http_client_of(client)
    except TypeError:
        return False
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
