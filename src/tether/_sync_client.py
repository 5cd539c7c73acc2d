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
    sdk: Any = client  # the SDK's private attributes, read as OpenAI.copy() reads them
    http = http_client if http_client is not None else _mirror_http_client(sdk._client, sdk)
    settings: dict[str, Any] = {
        "organization": sdk.organization,
        "project": sdk.project,
        "webhook_secret": getattr(sdk, "webhook_secret", None),
        "websocket_base_url": getattr(sdk, "websocket_base_url", None),
        "timeout": sdk.timeout,
        "max_retries": sdk.max_retries,
        "default_headers": dict(sdk._custom_headers),
        "default_query": dict(sdk._custom_query),
        "http_client": http,
        "_strict_response_validation": sdk._strict_response_validation,
        # The sync client checked its credentials when it was built; the twin only copies them.
        "_enforce_credentials": False,
    }
    key = _async_key(getattr(sdk, "_api_key_provider", None)) or sdk.api_key
    if isinstance(client, openai.AzureOpenAI):
        settings.update(
            api_version=sdk._api_version,
            base_url=str(sdk.base_url),
            api_key=key,
            admin_api_key=getattr(sdk, "admin_api_key", None),
            azure_ad_token=sdk._azure_ad_token,
            azure_ad_token_provider=sdk._azure_ad_token_provider,  # sync providers are accepted
        )
        twin: Any = openai.AsyncAzureOpenAI(**_accepted(openai.AsyncAzureOpenAI, settings))
        # As AzureOpenAI.copy() does: routing of non-deployment endpoints needs these.
        twin._azure_endpoint = sdk._azure_endpoint
        twin._azure_deployment = sdk._azure_deployment
        return twin
    provider = getattr(sdk, "_provider", None)
    if provider is not None:  # the provider configures auth and the base URL itself
        settings["provider"] = provider
    else:
        identity = getattr(sdk, "workload_identity", None)
        settings.update(
            api_key=None if identity is not None else key,
            admin_api_key=getattr(sdk, "admin_api_key", None),
            workload_identity=identity,
            base_url=sdk.base_url,
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


def _is_sdk_default(http_client: object) -> bool:
    """Whether the SDK built this HTTP client itself (no ``http_client=`` given)."""
    base_client = sys.modules.get("openai._base_client")
    wrapper = getattr(base_client, "SyncHttpxClientWrapper", None)
    return wrapper is not None and type(http_client) is wrapper


def _sdk_default_twin(http_client: Any, sdk: Any) -> Any:
    """The async SDK's default HTTP client, sharing the sync one's TLS context.

    Building a TLS context (loading the CA store) is most of what making an ``AsyncOpenAI``
    costs; an ``ssl.SSLContext`` may serve connections in several threads. ``None`` (the
    SDK builds its own) if this SDK lacks the wrapper class or the client its context.
    """
    base_client = sys.modules.get("openai._base_client")
    wrapper = getattr(base_client, "AsyncHttpxClientWrapper", None)
    pool = getattr(getattr(http_client, "_transport", None), "_pool", None)
    context = getattr(pool, "_ssl_context", None)
    if wrapper is None or context is None:
        return None
    return wrapper(base_url=sdk.base_url, timeout=sdk.timeout, verify=context)


def _mirror_http_client(http_client: Any, sdk: Any) -> Any:
    """An async HTTP client with the sync one's settings (the SDK default for its default)."""
    if _is_sdk_default(http_client):
        return _sdk_default_twin(http_client, sdk)
    httpx = _httpx_module(http_client)
    transport = http_client._transport
    pool: Any = getattr(transport, "_pool", None)
    if type(transport) is not httpx.HTTPTransport or type(pool).__name__ != "ConnectionPool":
        raise _cannot_mirror(f"its transport is {transport!r}")
    limits = httpx.Limits(
        max_connections=pool._max_connections,
        max_keepalive_connections=pool._max_keepalive_connections,
        keepalive_expiry=pool._keepalive_expiry,
    )
    async_transport = httpx.AsyncHTTPTransport(
        verify=pool._ssl_context,
        http1=pool._http1,
        http2=pool._http2,
        limits=limits,
        retries=pool._retries,
        local_address=pool._local_address,
        uds=pool._uds,
        socket_options=pool._socket_options,
    )
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
    if set(http_client._mounts) != set(twin._mounts):
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
