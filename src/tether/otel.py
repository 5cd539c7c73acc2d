"""OpenTelemetry for tether: spans for streams, cancels, races and agents; cancel metrics.

``pip install 'tether[otel]'`` (it adds ``opentelemetry-api``), then call
[`instrument`][tether.otel.instrument] once. tether sets nothing up itself: it takes the
global tracer and meter providers your application configured (or the ones you pass), and
records through them. Without this module imported, tether imports no OpenTelemetry and
its streams pay one check of an empty tuple per event.

The spans are built from tether's progress events (``tether.observe``), whose ``parent`` ids
make the tree: a stream's span is the child of its race attempt's or agent turn's span,
whatever task or backend it runs in (no context variable is relied on). A span with no
tether parent joins the trace that is current where it starts (your request's span).

| span | kind | from | to |
|---|---|---|---|
| ``chat {model}`` | client | a guarded stream opens | its block is over (cleanup included) |
| ``tether.cancel`` | client | the server-side cancel is sent | confirmed, or given up on |
| ``tether.race`` | internal | a race starts | every attempt has ended |
| ``tether.attempt {index}`` | internal | an attempt starts | it ended (won, lost...) |
| ``invoke_agent`` | internal | ``run_agent`` starts | it returns or raises |
| ``tether.turn {index}`` | internal | a turn's request | its tools returned |
| ``execute_tool {name}`` | internal | a tool call starts | it returned, raised or was cancelled |

No API key, request input, tool argument or output is ever recorded. The observability
guide lists every attribute and metric.

Example:
    ```python
    import tether.otel

    tether.otel.instrument()  # the global providers, set up by your application
    async with tether.guarded_stream(client, model="gpt-5", input="hi") as stream:
        ...
    ```
"""

from __future__ import annotations

import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any, final

try:
    from opentelemetry import metrics, trace
except ImportError as _missing:  # pragma: no cover - tested in a subprocess with an import blocker
    raise ImportError(
        "tether.otel needs the OpenTelemetry API: pip install 'tether[otel]'"
    ) from _missing

from . import observe
from ._otel_agents import AgentSpans
from ._otel_races import RaceSpans
from ._otel_spans import Instruments, SpanTree
from ._otel_streams import StreamSpans

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider


__all__ = ["OtelObserver", "instrument", "uninstrument"]


def _version() -> str:
    try:
        return metadata.version("tether")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0.0.0"


@final
class OtelObserver:
    """The observer that turns tether's events into spans and metrics.

    [`instrument`][tether.otel.instrument] registers one for the whole process; make your
    own to trace one block with ``tether.observe.observing``. It is quick (no
    I/O: the providers' processors export), never raises into tether, and keeps only the
    spans still open.

    Args:
        tracer_provider: Where spans go (default: the global provider, looked up at each
            span, so one set later is used).
        meter_provider: Where metrics go (default: the global provider).

    Example:
        ```python
        with tether.observe.observing(tether.otel.OtelObserver(tracer_provider=provider)):
            await tether.race(client, requests)
        ```
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        _check_providers(tracer_provider, meter_provider)
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        version = _version()
        meter = metrics.get_meter("tether", version, meter_provider=meter_provider)
        tree = self._tree = SpanTree(
            trace.get_tracer("tether", version, tracer_provider=tracer_provider)
        )
        instruments = Instruments(meter)
        streams = StreamSpans(tree, instruments)
        races = RaceSpans(tree, instruments)
        agents = AgentSpans(tree)
        self._handlers: dict[str, Callable[[Any], None]] = {
            "StreamEvent.Started": streams.stream_started,
            "StreamEvent.Opened": streams.stream_opened,
            "StreamEvent.CancelStarted": streams.cancel_started,
            "StreamEvent.CancelEnded": streams.cancel_ended,
            "StreamEvent.CancelOverruled": streams.cancel_overruled,
            "StreamEvent.Ended": streams.stream_ended,
            "RaceEvent.Started": races.race_started,
            "RaceEvent.AttemptStarted": races.attempt_started,
            "RaceEvent.AttemptEnded": races.attempt_ended,
            "RaceEvent.Decided": races.race_decided,
            "RaceEvent.Ended": races.race_ended,
            "AgentEvent.Started": agents.agent_started,
            "AgentEvent.Ended": agents.agent_ended,
            "AgentEvent.TurnStarted": agents.turn_started,
            "AgentEvent.TurnEnded": agents.turn_ended,
            "AgentEvent.ToolStarted": agents.tool_started,
            "AgentEvent.ToolEnded": agents.tool_ended,
        }

    def __call__(self, event: object) -> None:
        """Handle one event (events of other kinds are ignored)."""
        handler = self._handlers.get(type(event).__qualname__)
        if handler is not None:
            handler(event)

    @property
    def open_spans(self) -> int:
        """Spans started and not yet ended (streams, races, agents... still running)."""
        return len(self._tree.nodes)


_lock = threading.Lock()
_installed: OtelObserver | None = None


def _check_providers(tracer_provider: object, meter_provider: object) -> None:
    """Providers are duck-typed (the SDK's, a proxy, a no-op one): what tether calls."""
    for name, value, method in (
        ("tracer_provider", tracer_provider, "get_tracer"),
        ("meter_provider", meter_provider, "get_meter"),
    ):
        if value is not None and not callable(getattr(value, method, None)):
            kind = "TracerProvider" if method == "get_tracer" else "MeterProvider"
            raise TypeError(f"{name} must be an OpenTelemetry {kind} or None, got {value!r}")


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> OtelObserver:
    """Trace every tether stream, race and agent of this process, and record its metrics.

    Idempotent: a second call returns the observer already registered. tether configures
    nothing: without arguments it records through OpenTelemetry's global providers (set by
    your application, or by ``opentelemetry-instrument``).

    Args:
        tracer_provider: Where spans go (default: the global tracer provider).
        meter_provider: Where metrics go (default: the global meter provider).

    Returns:
        The registered [`OtelObserver`][tether.otel.OtelObserver].

    Raises:
        RuntimeError: Already instrumented with other providers (call
            [`uninstrument`][tether.otel.uninstrument] first).

    Example:
        ```python
        import tether.otel

        tether.otel.instrument()
        ```
    """
    global _installed
    _check_providers(tracer_provider, meter_provider)
    with _lock:
        if _installed is not None:
            if (
                _installed.tracer_provider is not tracer_provider
                or _installed.meter_provider is not meter_provider
            ):
                raise RuntimeError(
                    "tether.otel is already instrumented with other providers "
                    f"(tracer_provider={_installed.tracer_provider!r}, "
                    f"meter_provider={_installed.meter_provider!r}): call uninstrument() first"
                )
            return _installed
        installed = OtelObserver(tracer_provider=tracer_provider, meter_provider=meter_provider)
        observe.add_observer(installed)
        _installed = installed
        return installed


def uninstrument() -> None:
    """Stop tracing what [`instrument`][tether.otel.instrument] traced (a no-op if it did not).

    Spans of streams still running when it is called are not ended, so never exported.

    Example:
        ```python
        tether.otel.uninstrument()
        ```
    """
    global _installed
    with _lock:
        if _installed is not None:
            observe.remove_observer(_installed)
            _installed = None
