"""The SDK seam (``_compat/``): what tether relies on in openai, httpx/httpx2, httpcore, anyio, trio.

Each test pins one upstream behaviour a ``_compat`` function depends on, on a real client
talking to the emulator, so that an upstream release that moves it fails here, by name,
rather than somewhere deep in the suite. Run on both openai majors (2.x on httpx, 3.x on
httpx2).
"""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import openai
import pytest

from tests.conftest import requests_in_flight
from tether._compat import (
    HTTP,
    OPENAI_MAJOR,
    cancel_cause,
    close_interrupted,
    close_sdk_stream,
    copy_azure_routing,
    drain_sdk_stream,
    finish_interrupted_close,
    install_h2_fixes,
    is_sdk_default_http_client,
    lean_target,
    mounted_patterns,
    on_request_sent,
    pool_limits,
    pool_settings,
    sdk_http_client,
    sdk_http_client_of,
    sdk_inner_generator,
    sdk_next,
    sdk_stream_released,
    ssl_context_of,
    sync_client_settings,
    transport_of,
)
from tether.testing import ResponsesEmulator


async def open_sdk_stream(client: openai.AsyncOpenAI) -> Any:
    """A raw SDK ``AsyncStream`` on the emulator's slow model, its first event read."""
    stream: Any = await client.responses.create(model="slow", input="hi", stream=True)
    await stream.__anext__()
    return stream


# ------------------------------------------------------------------ the SDK client's settings


def test_the_sdk_client_sends_through_the_http_client_it_was_given() -> None:
    http = HTTP.AsyncClient()
    client = openai.AsyncOpenAI(api_key="k", http_client=http)
    assert sdk_http_client_of(client) is http


def test_sync_client_settings_read_back_what_the_client_was_built_with() -> None:
    client = openai.OpenAI(
        api_key="k",
        default_headers={"x-team": "a"},
        default_query={"q": "1"},
        _strict_response_validation=True,
    )
    settings = sync_client_settings(client)
    assert settings.default_headers == {"x-team": "a"}
    assert settings.default_query == {"q": "1"}
    assert settings.strict_response_validation is True
    assert settings.azure is None
    assert is_sdk_default_http_client(settings.http_client)


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="api key providers came with openai 3.x")
def test_sync_client_settings_read_back_an_api_key_provider() -> None:
    def provider() -> str:
        return "k"

    assert sync_client_settings(openai.OpenAI(api_key=provider)).api_key_provider is provider


def test_azure_settings_and_routing_are_read_and_copied() -> None:
    def token() -> str:
        return "t"

    client = openai.AzureOpenAI(
        api_version="2024-10-21",
        azure_endpoint="https://example.openai.azure.com",
        azure_deployment="dep",
        azure_ad_token_provider=token,
    )
    settings = sync_client_settings(client)
    assert settings.azure == {
        "api_version": "2024-10-21",
        "azure_ad_token": None,
        "azure_ad_token_provider": token,
    }
    twin = openai.AsyncAzureOpenAI(
        api_version="2024-10-21", base_url=str(client.base_url), azure_ad_token_provider=token
    )
    copy_azure_routing(client, twin)
    assert twin._azure_endpoint == client._azure_endpoint  # pyright: ignore[reportPrivateUsage]
    assert twin._azure_deployment == "dep"  # pyright: ignore[reportPrivateUsage]


def test_the_sdk_default_http_client_is_told_from_one_the_caller_built() -> None:
    assert is_sdk_default_http_client(openai.OpenAI(api_key="k")._client)  # pyright: ignore[reportPrivateUsage]
    assert not is_sdk_default_http_client(HTTP.Client())
    made = sdk_http_client(sync=False, verify=False)
    assert isinstance(made, HTTP.AsyncClient)
    assert type(made).__name__ == "AsyncHttpxClientWrapper"


# ---------------------------------------------------------------------------- httpcore's pool


def test_pool_settings_read_back_the_transport_it_was_built_with() -> None:
    limits = HTTP.Limits(max_connections=3, max_keepalive_connections=2, keepalive_expiry=7.0)
    http = HTTP.Client(limits=limits, http2=True, transport=None)
    settings = pool_settings(http)
    assert settings is not None
    assert (settings.max_connections, settings.max_keepalive_connections) == (3, 2)
    assert settings.keepalive_expiry == 7.0
    assert settings.transport_kwargs["http2"] is True
    assert settings.transport_kwargs["verify"] is ssl_context_of(http)
    accepted = inspect.signature(HTTP.AsyncHTTPTransport).parameters
    assert set(settings.transport_kwargs) <= set(accepted)
    assert isinstance(transport_of(http), HTTP.HTTPTransport)


def test_a_custom_transport_has_no_pool_settings() -> None:
    http = HTTP.Client(transport=HTTP.MockTransport(lambda request: HTTP.Response(200)))
    assert pool_settings(http) is None


def test_explicit_mounts_are_seen() -> None:
    plain = HTTP.Client(trust_env=False)
    mounted = HTTP.Client(trust_env=False, mounts={"http://proxied": HTTP.HTTPTransport()})
    assert mounted_patterns(plain) == set()
    assert len(mounted_patterns(mounted)) == 1


def test_pool_limits_are_read_from_the_sdk_clients_pool() -> None:
    http = HTTP.AsyncClient(limits=HTTP.Limits(max_connections=5, max_keepalive_connections=4))
    client = openai.AsyncOpenAI(api_key="k", http_client=http)
    expected = (5, 4) if OPENAI_MAJOR >= 3 else None  # 2.x: see pool_limits
    assert pool_limits(client) == expected


async def test_a_close_that_a_cancellation_interrupted_is_finished(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """httpcore marks its streams closed before the awaits of their close (httpcore#1115)."""
    stream = await open_sdk_stream(client)
    pool_stream = stream.response.stream._stream._httpcore_stream
    # What a native cancellation landing in PoolByteStream.aclose's first await leaves:
    pool_stream._closed = True
    if hasattr(pool_stream._stream, "_closed"):  # the HTTP/1.1 connection's stream
        pool_stream._stream._closed = True
    assert requests_in_flight(client) == 1  # the request still holds its connection
    await finish_interrupted_close(stream)
    assert requests_in_flight(client) == 0
    await emulator.wait_for(lambda ledger: not ledger.orphans())


async def test_a_close_that_a_cancellation_interrupted_is_told_from_a_finished_one(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    stream = await open_sdk_stream(client)
    pool_stream = stream.response.stream._stream._httpcore_stream
    assert not close_interrupted(stream)  # open
    pool_stream._closed = True  # as a native cancellation in PoolByteStream.aclose leaves it
    assert close_interrupted(stream)
    await finish_interrupted_close(stream)
    assert not close_interrupted(stream)
    await emulator.wait_for(lambda ledger: not ledger.orphans())


# --------------------------------------------------------------- the SDK's AsyncStream chain


async def test_the_sdk_releases_its_stream_when_its_events_end(client: openai.AsyncOpenAI) -> None:
    """The SDK closes the response in its event generator's ``finally`` (the guard's stop
    after a natural end relies on it: it then runs without a child task)."""
    stream: Any = await client.responses.create(model="fast", input="hi", stream=True)
    await stream.__anext__()
    assert not sdk_stream_released(stream)
    async for _ in stream:
        pass
    assert sdk_stream_released(stream)
    assert requests_in_flight(client) == 0


async def test_the_next_event_comes_from_the_sdk_streams_inner_generator(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    stream = await open_sdk_stream(client)
    step = sdk_next(stream)
    assert step == stream._iterator.__anext__
    event = await step()
    assert event.type.startswith("response.")
    await close_sdk_stream(stream)
    await drain_sdk_stream(stream)
    await emulator.wait_for(lambda ledger: not ledger.orphans())


async def test_the_sdk_streams_inner_generator_is_found_and_drained(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    stream = await open_sdk_stream(client)
    inner = sdk_inner_generator(stream)
    assert inner is not None
    assert inner.ag_code.co_name == "_iter_events"
    await close_sdk_stream(stream)
    await drain_sdk_stream(stream, inner)
    assert stream._iterator.ag_frame is None  # finished, not left suspended
    assert inner.ag_frame is None
    await emulator.wait_for(lambda ledger: not ledger.orphans())


async def test_the_request_hook_sees_the_headers_go_out(client: openai.AsyncOpenAI) -> None:
    sent: list[bool] = []
    with on_request_sent(client, lambda: sent.append(True)):
        await client.responses.create(model="fast", input="hi")
    assert sent == [True]


async def test_lean_stop_requests_raise_the_sdks_own_status_errors(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await open_sdk_stream(client)
    target = lean_target(client, stream)
    assert target is not None
    assert target.headers["authorization"] == f"Bearer {client.api_key}"
    with pytest.raises(openai.NotFoundError):
        await target.request("POST", "/responses/resp_missing/cancel")
    await close_sdk_stream(stream)
    await drain_sdk_stream(stream)


def test_no_lean_stop_for_a_client_with_default_query_parameters() -> None:
    client = openai.AsyncOpenAI(api_key="k", default_query={"api-version": "1"})
    assert lean_target(client, object()) is None


# ------------------------------------------------------------------ anyio's and trio's cancels


async def test_a_passed_deadline_is_told_from_the_cancellation_itself() -> None:
    caught: list[BaseException] = []
    with anyio.move_on_after(-1):
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    assert cancel_cause(caught[0]) == "deadline"


async def test_an_explicit_cancel_is_told_from_a_deadline() -> None:
    caught: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class() as exc:
            caught.append(exc)
            raise
    assert cancel_cause(caught[0]) == "cancelled"


# ------------------------------------------------------------------ hypercorn (the emulator)


def test_hypercorns_h2_protocol_has_what_the_emulators_fixes_override() -> None:
    from hypercorn.protocol import h2 as hypercorn_h2

    protocol = hypercorn_h2.H2Protocol
    for method in ("_handle_events", "stream_send", "_flush"):
        assert inspect.iscoroutinefunction(getattr(protocol, method)), method
    init = inspect.getsource(protocol.__init__)
    for attribute in ("streams", "stream_buffers", "priority", "connection", "closed"):
        assert f"self.{attribute} =" in init or f"self.{attribute}:" in init, attribute


def test_hypercorn_builds_its_h2_protocol_by_the_name_the_fix_replaces() -> None:
    import hypercorn.protocol
    from hypercorn.protocol import h2 as hypercorn_h2

    # ProtocolWrapper looks the class up in its module when a connection starts.
    assert "H2Protocol(" in inspect.getsource(hypercorn.protocol.ProtocolWrapper)
    install_h2_fixes()
    assert issubclass(hypercorn.protocol.H2Protocol, hypercorn_h2.H2Protocol)
    assert hypercorn.protocol.H2Protocol is not hypercorn_h2.H2Protocol


def test_temporal_activity_context_carries_the_heartbeat_that_activity_heartbeat_calls() -> None:
    """temporalio ``activity.py``: ``activity.heartbeat()`` calls ``_Context.current().heartbeat``,
    a field tether reads (``installed_heartbeat``) and swaps (``swap_heartbeat``) for the
    attempt; outside an activity both raise."""
    import contextvars

    from temporalio import activity

    from tether._compat import installed_heartbeat, swap_heartbeat

    seen: list[tuple[str, tuple[Any, ...]]] = []
    fields = set(inspect.signature(activity._Context).parameters)  # pyright: ignore[reportPrivateUsage]
    assert "heartbeat" in fields
    with pytest.raises(RuntimeError):
        swap_heartbeat(None)
    with pytest.raises(RuntimeError):
        installed_heartbeat()

    def run() -> None:
        context: Any = object.__new__(activity._Context)  # pyright: ignore[reportPrivateUsage]
        context.heartbeat = lambda *details: seen.append(("worker", details))
        activity._Context.set(context)  # pyright: ignore[reportPrivateUsage]
        ours = lambda *details: seen.append(("tether", details))  # noqa: E731
        previous = swap_heartbeat(ours)
        assert installed_heartbeat() is ours
        activity.heartbeat(1)
        assert swap_heartbeat(previous) is ours
        activity.heartbeat(2)

    contextvars.copy_context().run(run)
    assert seen == [("tether", (1,)), ("worker", (2,))]
