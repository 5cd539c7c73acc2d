# pyright: reportPrivateUsage=false
# This package is tether's one seam into other libraries' private objects: each one read here
# has a Protocol of its shape, an upstream reference, and a test in tests/test_compat.py.
"""The installed openai SDK: its major, its HTTP library, its client's private settings.

Also the lean stop path: tether's own stop requests, sent through the SDK client's HTTP
client with the headers of the request that opened the stream.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, final, runtime_checkable

import attrs
import openai
from openai import AsyncOpenAI, OpenAI
from typing_extensions import TypeIs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "HTTP",
    "OPENAI_MAJOR",
    "STREAM_CONNECTION_ERRORS",
    "LeanTarget",
    "SyncClientSettings",
    "check_async_client",
    "conforms",
    "copy_azure_routing",
    "is_sdk_default_http_client",
    "lean_target",
    "sdk_http_client",
    "sdk_http_client_of",
    "sync_client_settings",
]

OPENAI_MAJOR = int(openai.__version__.split(".", 1)[0])


HTTP: Any = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
"""The HTTP library the installed SDK is built on (httpx2 for 3.x, httpx for 2.x)."""

_T = TypeVar("_T")
_conforming: dict[tuple[type, type], bool] = {}


def conforms(obj: object, shape: type[_T]) -> TypeIs[_T]:
    """Whether *obj* has the private *shape* (a ``runtime_checkable`` Protocol).

    Checked once per class (``isinstance`` on a Protocol costs microseconds; the stop path
    asks per stream): the shapes read here are attributes every instance of the upstream
    class sets in its ``__init__``.
    """
    key = (type(obj), shape)
    found = _conforming.get(key)
    if found is None:
        found = _conforming[key] = isinstance(obj, shape)
    return found


def _stream_connection_errors() -> tuple[type[BaseException], ...]:
    if OPENAI_MAJOR >= 3:
        return (openai.APIConnectionError,)
    # 2.x wraps transport errors of the request, not those raised while reading the stream
    # (openai 2.x _streaming.py AsyncStream.__stream__ reads the httpx response unwrapped).
    return (openai.APIConnectionError, HTTP.TransportError)


STREAM_CONNECTION_ERRORS = _stream_connection_errors()
"""What a lost connection raises while a stream is read, on the installed SDK."""


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


# -- the SDK client's private settings ----------------------------------------------------------
#
# The SDK has no public accessor for its HTTP client, its default headers and query, or its
# strictness; ``OpenAI.copy()`` reads them from the private attributes set in
# ``openai/_base_client.py`` (``BaseClient.__init__``: ``_custom_headers``, ``_custom_query``,
# ``_strict_response_validation``; ``SyncAPIClient``/``AsyncAPIClient.__init__``: ``_client``),
# ``openai/lib/_client_auth.py`` (3.x: ``_api_key_provider``, ``_provider``) and
# ``openai/lib/azure.py`` (``AzureOpenAI.__init__``: ``_api_version``, ``_azure_*``).


@runtime_checkable
class _SdkClient(Protocol):
    """``openai._base_client.BaseClient`` and its sync/async ``APIClient`` subclasses."""

    _client: Any  # the httpx/httpx2 Client or AsyncClient
    _custom_headers: Mapping[str, str]
    _custom_query: Mapping[str, object]
    _strict_response_validation: bool

    def _make_status_error_from_response(self, response: Any) -> openai.APIStatusError: ...


@runtime_checkable
class _AzureClient(Protocol):
    """``openai.lib.azure.AzureOpenAI`` / ``AsyncAzureOpenAI`` (``__init__``)."""

    _api_version: str
    _azure_ad_token: str | None
    _azure_ad_token_provider: Callable[[], object] | None
    _azure_endpoint: object
    _azure_deployment: str | None


def _sdk_client(client: object) -> _SdkClient:
    if not conforms(client, _SdkClient):
        raise TypeError(f"not an openai SDK client of a known shape: {client!r}")
    return client


def sdk_http_client_of(client: OpenAI | AsyncOpenAI) -> Any:
    """The HTTP client (httpx/httpx2) an SDK client sends its requests through."""
    return _sdk_client(client)._client


@final
@attrs.frozen(kw_only=True)
class SyncClientSettings:
    """What ``OpenAI.copy()`` reads from a sync client beyond its public attributes."""

    http_client: Any
    """The SDK's HTTP client (an ``httpx2.Client``; ``httpx.Client`` on 2.x)."""
    default_headers: dict[str, str]
    """The ``default_headers`` it was built with."""
    default_query: dict[str, object]
    """The ``default_query`` it was built with."""
    strict_response_validation: bool
    """Its ``_strict_response_validation``."""
    api_key_provider: Callable[[], str] | None
    """The callable given as ``api_key`` (openai 3.x), if any."""
    provider: object
    """The auth provider it was built with (openai 3.x), if any."""
    azure: dict[str, Any] | None
    """An Azure client's ``api_version``, ``azure_ad_token`` and ``azure_ad_token_provider``."""


def sync_client_settings(client: OpenAI) -> SyncClientSettings:
    """The private settings of a sync SDK client, as ``OpenAI.copy()`` reads them."""
    sdk = _sdk_client(client)
    azure = None
    if conforms(client, _AzureClient):
        azure = {
            "api_version": client._api_version,
            "azure_ad_token": client._azure_ad_token,
            "azure_ad_token_provider": client._azure_ad_token_provider,
        }
    provider: Callable[[], str] | None = getattr(client, "_api_key_provider", None)
    return SyncClientSettings(
        http_client=sdk._client,
        default_headers=dict(sdk._custom_headers),
        default_query=dict(sdk._custom_query),
        strict_response_validation=sdk._strict_response_validation,
        api_key_provider=provider,
        provider=getattr(client, "_provider", None),
        azure=azure,
    )


def copy_azure_routing(source: object, target: object) -> None:
    """Give *target* the Azure endpoint and deployment of *source*, as ``AzureOpenAI.copy()`` does.

    The routing of non-deployment endpoints needs them; the constructor does not take both.
    """
    if not conforms(source, _AzureClient) or not conforms(target, _AzureClient):
        raise TypeError(f"both clients must be Azure clients, got {source!r} and {target!r}")
    target._azure_endpoint = source._azure_endpoint
    target._azure_deployment = source._azure_deployment


def _wrapper_class(*, sync: bool) -> type | None:
    """``openai._base_client.SyncHttpxClientWrapper`` or ``AsyncHttpxClientWrapper``.

    The HTTP client class the SDK builds when given none (its ``__del__`` closes it).
    """
    base_client = sys.modules.get("openai._base_client")
    wrapper: object = getattr(
        base_client, "SyncHttpxClientWrapper" if sync else "AsyncHttpxClientWrapper", None
    )
    return wrapper if isinstance(wrapper, type) else None


def is_sdk_default_http_client(http_client: object) -> bool:
    """Whether the SDK built this sync HTTP client itself (no ``http_client=`` given)."""
    wrapper = _wrapper_class(sync=True)
    return wrapper is not None and type(http_client) is wrapper


def sdk_http_client(*, sync: bool, **kwargs: Any) -> Any:
    """A new HTTP client of the class the SDK makes when given none, or None if it has none.

    *kwargs* go to the ``httpx2.Client`` / ``AsyncClient`` constructor (``verify=``,
    ``base_url=``, ``timeout=``).
    """
    wrapper = _wrapper_class(sync=sync)
    return None if wrapper is None else wrapper(**kwargs)


# -- the lean stop path -------------------------------------------------------------------------
#
# A cancel through the SDK parses the whole ``Response`` into models, builds its request
# through the SDK's machinery and, through a client copy, recomputes the platform headers:
# on a stop that costs more than the POST itself. tether sends its stop requests itself,
# through the client's own HTTP client, with the headers of the request that opened the
# stream (auth, organization, project, user agent, the caller's own extra headers). Only for
# clients it can mirror: a plain ``AsyncOpenAI`` without default query parameters (Azure's
# deployments and api-version, a subclass's own auth: the SDK path). Errors are made by the
# SDK's own ``_make_status_error_from_response`` (``openai/_client.py``).

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
        raise _sdk_client(self.client)._make_status_error_from_response(response)


def lean_target(client: AsyncOpenAI, stream: Any) -> LeanTarget | None:
    """The lean stop path for a stream opened through *client*, or None (use the SDK's)."""
    if type(client) is not AsyncOpenAI or not conforms(client, _SdkClient):
        return None
    if client._custom_query:
        return None
    http: Any = client._client
    request: Any = getattr(getattr(stream, "response", None), "request", None)
    if request is None or not hasattr(http, "request"):
        return None
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_MIRRORED}
    headers["accept"] = "application/json"
    return LeanTarget(client, http, str(client.base_url), headers)
