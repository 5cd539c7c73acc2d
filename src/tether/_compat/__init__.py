"""The one seam between tether and the libraries under it (openai, httpx/httpx2, httpcore, anyio).

Everything that differs between the two openai majors (2.x on httpx, 3.x on httpx2), and every
reach into another library's private objects, lives in this package, so the rest of tether is
written against one surface and ``reportPrivateUsage`` stays on everywhere else. Each reach is
typed with a Protocol of the private shape it reads, names the upstream source (or issue) it
depends on, and has a test in ``tests/test_compat.py`` that fails when upstream changes it
(run on both openai majors).

- ``_sdk.py``: which SDK is installed, its HTTP library, the SDK client's private settings
  and HTTP client (the lean stop path, the sync client's async twin, the emulator's clients).
- ``_stream.py``: the SDK's ``AsyncStream`` internals (its generator chain) and the cause of
  a cancellation (anyio's and trio's).
- ``_pool.py``: httpcore's connection pool (limits, settings, the interrupted close).
- ``_sent.py``: knowing when a request has left (httpcore's ``trace`` extension).
- ``_temporal.py``: temporalio's activity context (``activity.heartbeat()`` routed
  through a guarded stream's checkpoint).
- ``_hypercorn.py``: two fixes to hypercorn's HTTP/2 protocol, for the emulator.
"""

from __future__ import annotations

from ._hypercorn import install_h2_fixes
from ._pool import (
    PoolSettings,
    close_interrupted,
    finish_interrupted_close,
    mounted_patterns,
    pool_limits,
    pool_settings,
    ssl_context_of,
    transport_of,
)
from ._sdk import (
    HTTP,
    OPENAI_MAJOR,
    STREAM_CONNECTION_ERRORS,
    LeanTarget,
    SyncClientSettings,
    check_async_client,
    copy_azure_routing,
    is_sdk_default_http_client,
    lean_target,
    sdk_http_client,
    sdk_http_client_of,
    sync_client_settings,
)
from ._sent import on_request_sent
from ._stream import (
    cancel_cause,
    close_sdk_stream,
    drain_sdk_stream,
    is_multiplexed,
    sdk_inner_generator,
    sdk_next,
    sdk_stream_released,
)
from ._temporal import installed_heartbeat, swap_heartbeat

__all__ = [
    "HTTP",
    "OPENAI_MAJOR",
    "STREAM_CONNECTION_ERRORS",
    "LeanTarget",
    "PoolSettings",
    "SyncClientSettings",
    "cancel_cause",
    "check_async_client",
    "close_interrupted",
    "close_sdk_stream",
    "copy_azure_routing",
    "drain_sdk_stream",
    "finish_interrupted_close",
    "install_h2_fixes",
    "installed_heartbeat",
    "is_multiplexed",
    "is_sdk_default_http_client",
    "lean_target",
    "mounted_patterns",
    "on_request_sent",
    "pool_limits",
    "pool_settings",
    "sdk_http_client",
    "sdk_http_client_of",
    "sdk_inner_generator",
    "sdk_next",
    "sdk_stream_released",
    "ssl_context_of",
    "swap_heartbeat",
    "sync_client_settings",
    "transport_of",
]
