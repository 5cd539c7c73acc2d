"""The async twin of a sync ``openai.OpenAI``: same account, same endpoint, same limits.

``tether.sync`` runs the async implementation in a blocking portal, so it needs an
``AsyncOpenAI`` equivalent to the caller's ``OpenAI``. The settings are read the way the
SDK's own ``OpenAI.copy()`` reads them (``lib/_client_auth.py``, ``synccopy``): api key (or
key provider), admin key, workload identity or provider, organization, project, webhook
secret, base URL, websocket base URL, timeout, max retries, default headers and query,
strict validation; Azure clients keep their API version, AD token (or token provider),
endpoint and deployment.

The HTTP client: the SDK's default one maps to the async SDK's default (sharing its TLS
context: building one is most of the cost of a new client). A client the
caller built (``http_client=httpx2.Client(...)``) is mirrored: pool limits (a pool of one
stays a pool of one), TLS context, HTTP/1.1 and HTTP/2, transport retries, local address,
Unix socket, socket options, timeout, headers, params, cookies, auth, redirects, event
hooks and ``trust_env`` (so proxies from the environment apply). A custom transport, or a
proxy given explicitly, cannot be mirrored: that raises a ``TypeError`` asking for
``async_http_client=``.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

import openai

from ._compat import (
    copy_azure_routing,
    is_sdk_default_http_client,
    mounted_patterns,
    pool_settings,
    sdk_http_client,
    ssl_context_of,
    sync_client_settings,
    transport_of,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["async_twin"]

_HTTPX_MODULES = ("httpx2", "httpx")  # openai 3.x runs on httpx2, 2.x on httpx


def async_twin(
    client: object, *, http_client: Any = None, instead: str = "tether.guarded_stream"
) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``) configured like the sync *client*.

    *http_client*, if given, is used as is (an ``httpx2.AsyncClient``); else the sync
    client's HTTP client is mirrored (see the module docstring). *instead* names the async
    API to point an ``AsyncOpenAI`` user at.

    Raises:
        TypeError: *client* is not a sync ``openai.OpenAI``, or its HTTP client cannot be
            mirrored and no *http_client* was given.
    """
    if isinstance(client, openai.AsyncOpenAI):
        raise TypeError(
            f"tether.sync needs a sync openai.OpenAI, got an async {type(client).__name__}: "
            f"use {instead} for the async client"
        )
    if not isinstance(client, openai.OpenAI):
        raise TypeError(f"client must be an openai.OpenAI, got {client!r}")
    if http_client is not None and not any(
        module is not None and isinstance(http_client, module.AsyncClient)
        for module in map(sys.modules.get, _HTTPX_MODULES)
    ):
        raise TypeError(
            f"async_http_client must be an httpx2.AsyncClient (httpx.AsyncClient on openai "
            f"2.x) or None, got {http_client!r}"
        )
    private = sync_client_settings(client)
    http = (
        http_client if http_client is not None else _mirror_http_client(private.http_client, client)
    )
    settings: dict[str, Any] = {
        "organization": client.organization,
        "project": client.project,
        "webhook_secret": getattr(client, "webhook_secret", None),
        "websocket_base_url": getattr(client, "websocket_base_url", None),
        "timeout": client.timeout,
        "max_retries": client.max_retries,
        "default_headers": private.default_headers,
        "default_query": private.default_query,
        "http_client": http,
        "_strict_response_validation": private.strict_response_validation,
        # The sync client checked its credentials when it was built; the twin only copies them.
        "_enforce_credentials": False,
    }
    key = _async_key(private.api_key_provider) or client.api_key
    if isinstance(client, openai.AzureOpenAI):
        settings.update(
            private.azure or {},  # sync token providers are accepted by the async client
            base_url=str(client.base_url),
            api_key=key,
            admin_api_key=getattr(client, "admin_api_key", None),
        )
        twin = openai.AsyncAzureOpenAI(**_accepted(openai.AsyncAzureOpenAI, settings))
        copy_azure_routing(client, twin)
        return twin
    if private.provider is not None:  # the provider configures auth and the base URL itself
        settings["provider"] = private.provider
    else:
        identity = getattr(client, "workload_identity", None)
        settings.update(
            api_key=None if identity is not None else key,
            admin_api_key=getattr(client, "admin_api_key", None),
            workload_identity=identity,
            base_url=client.base_url,
        )
    return openai.AsyncOpenAI(**_accepted(openai.AsyncOpenAI, settings))


def _accepted(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings *cls* accepts (openai 2.x lacks some of 3.x's)."""
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in settings.items() if k in names}


def _async_key(provider: Callable[[], str] | None) -> Callable[[], Awaitable[str]] | None:
    """Wrap a sync api-key provider for the async client (it is called on the portal's loop)."""
    if provider is None:
        return None

    async def api_key() -> str:
        return provider()

    return api_key


def _httpx_module(http_client: object) -> Any:
    for name in _HTTPX_MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(http_client, module.Client):
            return module
    raise TypeError(f"the client's http_client is not an httpx2/httpx Client: {http_client!r}")


def _sdk_default_twin(http_client: object, client: openai.OpenAI) -> Any:
    """The async SDK's default HTTP client, sharing the sync one's TLS context.

    Building a TLS context (loading the CA store) is most of what making an ``AsyncOpenAI``
    costs; an ``ssl.SSLContext`` may serve connections in several threads. ``None`` (the
    SDK builds its own) if this SDK lacks the wrapper class or the client its context.
    """
    context = ssl_context_of(http_client)
    if context is None:
        return None
    return sdk_http_client(
        sync=False, base_url=client.base_url, timeout=client.timeout, verify=context
    )


def _mirror_http_client(http_client: Any, client: openai.OpenAI) -> Any:
    """An async HTTP client with the sync one's settings (the SDK default for its default)."""
    if is_sdk_default_http_client(http_client):
        return _sdk_default_twin(http_client, client)
    httpx = _httpx_module(http_client)
    transport = transport_of(http_client)
    pool = pool_settings(http_client)
    if type(transport) is not httpx.HTTPTransport or pool is None:
        raise _cannot_mirror(f"its transport is {transport!r}")
    limits = httpx.Limits(
        max_connections=pool.max_connections,
        max_keepalive_connections=pool.max_keepalive_connections,
        keepalive_expiry=pool.keepalive_expiry,
    )
    async_transport = httpx.AsyncHTTPTransport(limits=limits, **pool.transport_kwargs)
    hooks = {
        kind: [_async_hook(hook) for hook in hooks]
        for kind, hooks in http_client.event_hooks.items()
    }
    twin = httpx.AsyncClient(
        auth=http_client.auth,
        params=http_client.params,
        headers=http_client.headers,
        cookies=http_client.cookies,
        timeout=http_client.timeout,
        follow_redirects=http_client.follow_redirects,
        max_redirects=http_client.max_redirects,
        event_hooks=hooks,
        base_url=http_client.base_url,
        transport=async_transport,
        trust_env=http_client.trust_env,
    )
    # Mounts the async client did not derive from the environment were set explicitly
    # (proxy=, mounts=): their transports are sync objects we cannot translate.
    if mounted_patterns(http_client) != mounted_patterns(twin):
        raise _cannot_mirror("it has explicit proxies or mounts")
    return twin


def _async_hook(hook: Callable[[Any], object]) -> Callable[[Any], Awaitable[None]]:
    async def run(message: Any) -> None:
        hook(message)

    return run


def _cannot_mirror(why: str) -> TypeError:
    return TypeError(
        f"tether.sync cannot mirror this OpenAI client's http_client on the async side ({why}): "
        "pass async_http_client=httpx2.AsyncClient(...) configured the same way"
    )
