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
from typing import TYPE_CHECKING, Any, cast, final

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as _missing:  # pragma: no cover - tested in a subprocess with an import blocker
    raise ImportError(
        "tether.otel needs the OpenTelemetry API: pip install 'tether[otel]'"
    ) from _missing

from . import observe

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from ._outcome import CancelReceipt, StreamOutcome

__all__ = ["OtelObserver", "instrument", "uninstrument"]

_SYSTEM = "openai"
_HEDGE = "silence"  # the trigger of an attempt started because the previous one was silent
_ERROR_REASONS = frozenset({"exception", "failed", "stalled"})
"""End reasons that are failures. Every other one is a normal end or a stop the user asked
for (``break``, ``deadline``, ``race_lost``, ``explicit``, ``scope_cancelled``...)."""
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


def _version() -> str:
    try:
        return metadata.version("tether")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0.0.0"


@final
class _Node:
    """One live span and what its children need from it."""

    __slots__ = (
        "cancel",
        "children",
        "context",
        "hedge_won",
        "kind",
        "model",
        "parent",
        "response_id",
        "span",
        "trigger",
    )

    def __init__(self, span: Span, kind: str, parent: int | None) -> None:
        self.span = span
        self.kind = kind
        self.parent = parent
        self.context: Context = trace.set_span_in_context(span)
        self.response_id: str | None = None
        self.cancel: Span | None = None  # a stream's live cancel span
        self.children: list[int] = []  # the ids of the nodes started under this one
        self.hedge_won = False  # a race: the hedge that won it is counted
        self.trigger: str | None = None  # an attempt: why it was started
        self.model: str | None = None  # an attempt: its model


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
        self._tracer = trace.get_tracer("tether", version, tracer_provider=tracer_provider)
        meter = metrics.get_meter("tether", version, meter_provider=meter_provider)
        self._cancels = meter.create_counter(
            "tether.cancels", "{cancel}", "Responses tether stopped early, by reason and status."
        )
        self._unconfirmed = meter.create_counter(
            "tether.cancels.unconfirmed",
            "{cancel}",
            "Server-side cancels the server did not confirm within grace: responses that "
            "may still be generating (alert on it).",
        )
        self._overruled = meter.create_counter(
            "tether.cancels.overruled",
            "{cancel}",
            "Server-side cancels answered cancelled that the server did not honour: the "
            "response went on and completed (billed), or was still generating (alert on it).",
        )
        self._cancel_duration = meter.create_histogram(
            "tether.cancel.duration",
            "s",
            "From the first cancel request to the server's answer (or to giving up).",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._stream_duration = meter.create_histogram(
            "tether.stream.duration",
            "s",
            "From a guarded stream's request to the end of its cleanup.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used by the responses that reported usage.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._hedges_started = meter.create_counter(
            "tether.hedges.started",
            "{attempt}",
            "Race attempts started because the previous one stayed silent for the stagger.",
        )
        self._hedges_won = meter.create_counter(
            "tether.hedges.won", "{attempt}", "Hedged attempts that won their race."
        )
        self._nodes: dict[int, _Node] = {}
        self._handlers: dict[str, Callable[[Any], None]] = {
            "StreamEvent.Started": self._stream_started,
            "StreamEvent.Opened": self._stream_opened,
            "StreamEvent.CancelStarted": self._cancel_started,
            "StreamEvent.CancelEnded": self._cancel_ended,
            "StreamEvent.CancelOverruled": self._cancel_overruled,
            "StreamEvent.Ended": self._stream_ended,
            "RaceEvent.Started": self._race_started,
            "RaceEvent.AttemptStarted": self._attempt_started,
            "RaceEvent.AttemptEnded": self._attempt_ended,
            "RaceEvent.Decided": self._race_decided,
            "RaceEvent.Ended": self._race_ended,
            "AgentEvent.Started": self._agent_started,
            "AgentEvent.Ended": self._agent_ended,
            "AgentEvent.TurnStarted": self._turn_started,
            "AgentEvent.TurnEnded": self._turn_ended,
            "AgentEvent.ToolStarted": self._tool_started,
            "AgentEvent.ToolEnded": self._tool_ended,
        }

    def __call__(self, event: object) -> None:
        """Handle one event (events of other kinds are ignored)."""
        handler = self._handlers.get(type(event).__qualname__)
        if handler is not None:
            handler(event)

    @property
    def open_spans(self) -> int:
        """Spans started and not yet ended (streams, races, agents... still running)."""
        return len(self._nodes)

    # ------------------------------------------------------------------ plumbing

    def _start(
        self,
        event: Any,
        name: str,
        kind: str,
        attributes: dict[str, AttributeValue],
        *,
        client: bool = False,
    ) -> _Node:
        parent: int | None = event.parent
        above = None if parent is None else self._nodes.get(parent)
        span = self._tracer.start_span(
            name,
            context=None if above is None else above.context,  # a root joins the current trace
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=attributes,
        )
        node = self._nodes[event.id] = _Node(span, kind, parent)
        if above is not None:
            above.children.append(event.id)
        return node

    def _end(self, node: _Node) -> None:
        """End a race's, agent's, turn's or tool's span, and any child left open under it.

        A child whose end event never came (an attempt that was started, then skipped) is
        ended with its parent, marked ``tether.abandoned``, so no span is left open forever.
        """
        for child_id in node.children:
            child = self._nodes.pop(child_id, None)
            if child is not None:
                child.span.set_attribute("tether.abandoned", True)
                if child.cancel is not None:
                    child.cancel.end()
                self._end(child)
        node.span.end()

    def _note_response(self, node: _Node, response_id: str) -> None:
        """A stream got its id: so did the attempt or turn it is the one stream of."""
        node.response_id = response_id
        node.span.set_attribute("gen_ai.response.id", response_id)
        above = None if node.parent is None else self._nodes.get(node.parent)
        if above is not None and above.kind in ("attempt", "turn") and above.response_id is None:
            above.response_id = response_id
            above.span.set_attribute("gen_ai.response.id", response_id)

    # ------------------------------------------------------------------- streams

    def _stream_started(self, event: observe.StreamEvent.Started) -> None:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.system": _SYSTEM,
            "gen_ai.provider.name": _SYSTEM,
            "gen_ai.operation.name": "chat",
            "tether.background": event.background,
            "tether.resumed": event.resumed,
        }
        if event.model is not None:
            attributes["gen_ai.request.model"] = event.model
        name = "chat" if event.model is None else f"chat {event.model}"
        node = self._start(event, name, "stream", attributes, client=True)
        response_id = getattr(event.stream, "response_id", None)  # known when resuming
        if isinstance(response_id, str):
            self._note_response(node, response_id)

    def _stream_opened(self, event: observe.StreamEvent.Opened) -> None:
        node = self._nodes.get(event.id)
        if node is not None:
            self._note_response(node, event.response_id)

    def _cancel_started(self, event: observe.StreamEvent.CancelStarted) -> None:
        node = self._nodes.get(event.id)
        if node is None:
            return
        node.cancel = self._tracer.start_span(
            "tether.cancel",
            context=node.context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.system": _SYSTEM,
                "gen_ai.response.id": event.response_id,
                "tether.end_reason": event.reason,
            },
        )

    def _cancel_ended(self, event: observe.StreamEvent.CancelEnded) -> None:
        node = self._nodes.get(event.id)
        if node is None or node.cancel is None:
            return
        span, node.cancel = node.cancel, None
        _receipt_attributes(span, event.receipt)
        if not event.receipt.stopped:
            span.set_attribute("error.type", "cancel_unconfirmed")
            span.set_status(Status(StatusCode.ERROR, event.receipt.error or "cancel unconfirmed"))
        span.end()

    def _cancel_overruled(self, event: observe.StreamEvent.CancelOverruled) -> None:
        receipt = event.receipt
        self._overruled.add(1, {"tether.cancel.status": receipt.status or "unknown"})

    def _stream_ended(self, event: observe.StreamEvent.Ended) -> None:
        node = self._nodes.pop(event.id, None)
        outcome = event.outcome
        self._record_stream(outcome)
        if node is None:
            return
        span = node.span
        if node.cancel is not None:  # pragma: no cover - StreamEvent.CancelEnded always comes first
            node.cancel.end()
        if node.response_id is None and outcome.response_id is not None:
            self._note_response(node, outcome.response_id)
        span.set_attribute("tether.end_reason", outcome.reason)
        span.set_attribute("tether.events", outcome.events)
        span.set_attribute("tether.deltas", outcome.deltas)
        span.set_attribute("tether.resumes", outcome.resumes)
        if outcome.status is not None:
            span.set_attribute("tether.response.status", outcome.status)
        usage = outcome.usage  # None after a cancel, or from a server that sent none
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if outcome.receipt is not None:
            _receipt_attributes(span, outcome.receipt)
        error = _stream_error(outcome)
        if error is not None:
            span.set_attribute("error.type", error[0])
            span.set_status(Status(StatusCode.ERROR, error[1]))
        span.end()

    def _record_stream(self, outcome: StreamOutcome) -> None:
        base: dict[str, AttributeValue] = {"tether.end_reason": outcome.reason}
        if outcome.model is not None:
            base["gen_ai.request.model"] = outcome.model
        self._stream_duration.record(outcome.duration, base)
        receipt = outcome.receipt
        if receipt is not None and receipt.kind != "none":
            cancel = dict(base, **{"tether.cancel.status": receipt.status or "unknown"})
            cancel["tether.cancel.kind"] = receipt.kind
            self._cancels.add(1, cancel)
            if receipt.kind == "server":
                self._cancel_duration.record(receipt.latency, cancel)
                if not receipt.stopped:
                    self._unconfirmed.add(1, cancel)
        usage = outcome.usage
        if usage is not None:
            tokens: dict[str, AttributeValue] = {
                "gen_ai.system": _SYSTEM,
                "gen_ai.operation.name": "chat",
            }
            if outcome.model is not None:
                tokens["gen_ai.request.model"] = outcome.model
            self._tokens.record(usage.input_tokens, dict(tokens, **{"gen_ai.token.type": "input"}))
            self._tokens.record(
                usage.output_tokens, dict(tokens, **{"gen_ai.token.type": "output"})
            )

    # --------------------------------------------------------------------- races

    def _race_started(self, event: Any) -> None:
        attributes: dict[str, AttributeValue] = {}
        win = getattr(event, "win", None)
        if win is not None:
            attributes["tether.race.win"] = str(win)
        models: object = getattr(event, "models", None)
        count = (
            len(cast("tuple[object, ...]", models))
            if isinstance(models, tuple)
            else _first(event, int, "attempts")
        )
        if count is not None:
            attributes["tether.race.attempts"] = count
        stagger = getattr(event, "stagger", None)
        if isinstance(stagger, (int, float)) and not isinstance(stagger, bool):
            attributes["tether.race.stagger"] = float(stagger)
        self._start(event, "tether.race", "race", attributes)

    def _attempt_started(self, event: Any) -> None:
        index = getattr(event, "index", None)
        model = getattr(event, "model", None)
        trigger = getattr(event, "trigger", None)
        attributes: dict[str, AttributeValue] = {"gen_ai.system": _SYSTEM}
        if isinstance(index, int):
            attributes["tether.attempt.index"] = index
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        if isinstance(trigger, str):
            attributes["tether.attempt.trigger"] = trigger
            attributes["tether.attempt.hedge"] = trigger == _HEDGE
        name = "tether.attempt" if index is None else f"tether.attempt {index}"
        node = self._start(event, name, "attempt", attributes)
        node.trigger = trigger if isinstance(trigger, str) else None
        node.model = model if isinstance(model, str) else None
        if trigger == _HEDGE:
            self._hedges_started.add(1, _model_attributes(model))

    def _attempt_ended(self, event: Any) -> None:
        node = self._nodes.pop(event.id, None)
        if node is None:
            return
        attempt = getattr(event, "attempt", None)
        state = _first(event, str, "state") or _first(attempt, str, "state")
        outcome = getattr(event, "outcome", None) or getattr(attempt, "outcome", None)
        response_id = getattr(outcome, "response_id", None)
        if node.response_id is None and isinstance(response_id, str):
            node.response_id = response_id
            node.span.set_attribute("gen_ai.response.id", response_id)
        if state is not None:
            node.span.set_attribute("tether.attempt.state", state)
        if state == "won" and node.trigger == _HEDGE:
            self._count_hedge_won(node.parent, node.model)
        if state == "failed":
            node.span.set_attribute("error.type", "attempt_failed")
            node.span.set_status(Status(StatusCode.ERROR, "the attempt failed"))
        self._end(node)

    def _count_hedge_won(self, race: int | _Node | None, model: object) -> None:
        """Count a hedge that won, once per race (whichever event says it first)."""
        node = self._nodes.get(race) if isinstance(race, int) else race
        if node is not None:
            if node.hedge_won:
                return
            node.hedge_won = True
        self._hedges_won.add(1, _model_attributes(model))

    def _race_decided(self, event: Any) -> None:
        node = self._nodes.get(event.id)
        if node is None:
            return
        winner = getattr(event, "winner", None)
        index = winner if isinstance(winner, int) else _first(winner, int, "index")
        if index is None:
            index = _first(event, int, "index", "winner_index")
        attributes: dict[str, AttributeValue] = {}
        if index is not None:
            attributes["tether.race.winner"] = index
            node.span.set_attribute("tether.race.winner", index)
        node.span.add_event("tether.race.decided", attributes)
        winner_id = _first(event, int, "winner_id")
        attempt = None if winner_id is None else self._nodes.get(winner_id)
        if attempt is not None and attempt.trigger == _HEDGE:
            self._count_hedge_won(event.id, attempt.model)

    def _race_ended(self, event: Any) -> None:
        node = self._nodes.pop(event.id, None)
        if node is None:
            return
        result = getattr(event, "result", None)
        winner = getattr(result, "winner", None)
        if winner is not None:
            index = getattr(winner, "index", None)
            if isinstance(index, int):
                node.span.set_attribute("tether.race.winner", index)
            if getattr(winner, "trigger", None) == _HEDGE:
                self._count_hedge_won(node, getattr(winner, "model", None))
        hedges = getattr(result, "hedges", None)
        if isinstance(hedges, int):
            node.span.set_attribute("tether.race.hedges", hedges)
        error = getattr(event, "error", None) or getattr(event, "exception", None)
        if isinstance(error, Exception):
            node.span.set_attribute("error.type", type(error).__name__)
            node.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._end(node)

    # -------------------------------------------------------------------- agents

    def _agent_started(self, event: Any) -> None:
        self._start(
            event,
            "invoke_agent",
            "agent",
            {
                "gen_ai.system": _SYSTEM,
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.request.model": event.model,
                "tether.agent.tools": list(event.tools),
                "tether.agent.max_turns": event.max_turns,
            },
        )

    def _agent_ended(self, event: Any) -> None:
        node = self._nodes.pop(event.id, None)
        if node is None:
            return
        span = node.span
        result = event.result
        exception = event.exception
        if result is not None:
            span.set_attribute("tether.agent.stopped_by", result.reason)
            span.set_attribute("tether.agent.turns", len(result.turns))
            if any(turn.usage is not None for turn in result.turns):
                span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
            if result.reason == "tool_error":
                span.set_attribute("error.type", "tool_error")
                span.set_status(Status(StatusCode.ERROR, "a tool raised"))
        elif isinstance(exception, Exception):  # a cancellation or Ctrl-C is no error
            span.set_attribute("error.type", type(exception).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        self._end(node)

    def _turn_started(self, event: Any) -> None:
        self._start(event, f"tether.turn {event.index}", "turn", {"tether.turn.index": event.index})

    def _turn_ended(self, event: Any) -> None:
        node = self._nodes.pop(event.id, None)
        if node is None:
            return
        span = node.span
        turn = event.turn
        if node.response_id is None and turn.response_id is not None:
            node.response_id = turn.response_id
            span.set_attribute("gen_ai.response.id", turn.response_id)
        if turn.status is not None:
            span.set_attribute("tether.response.status", turn.status)
        if turn.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", turn.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", turn.usage.output_tokens)
        span.set_attribute("tether.turn.tool_calls", len(turn.tool_calls))
        if turn.outcome is not None:
            span.set_attribute("tether.end_reason", turn.outcome.reason)
        self._end(node)

    def _tool_started(self, event: Any) -> None:
        self._start(
            event,
            f"execute_tool {event.name}",
            "tool",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.name,
                "gen_ai.tool.call.id": event.call_id,
                "gen_ai.tool.type": "function",
            },
        )

    def _tool_ended(self, event: Any) -> None:
        node = self._nodes.pop(event.id, None)
        if node is None:
            return
        span = node.span
        call = event.call
        span.set_attribute("tether.tool.cancelled", call.cancelled)
        if call.error is not None:
            kind = "tool_error" if call.exception is None else type(call.exception).__name__
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, call.error))
        self._end(node)


def _receipt_attributes(span: Span, receipt: CancelReceipt) -> None:
    span.set_attribute("tether.cancel.kind", receipt.kind)
    span.set_attribute("tether.cancel.status", receipt.status or "unknown")
    span.set_attribute("tether.cancel.attempts", receipt.attempts)
    span.set_attribute("tether.cancel.stopped", receipt.stopped)
    if receipt.kind == "server":
        span.set_attribute("tether.cancel.latency", receipt.latency)


def _stream_error(outcome: StreamOutcome) -> tuple[str, str] | None:
    """``(error.type, description)`` when a stream's end is a failure, else ``None``."""
    if outcome.reason in _ERROR_REASONS:
        return outcome.reason, f"the stream ended: {outcome.reason}"
    receipt = outcome.receipt
    if receipt is not None and not receipt.stopped:
        return "cancel_unconfirmed", receipt.error or "the server did not confirm the cancel"
    if outcome.cleanup_error is not None:
        return "cleanup_error", outcome.cleanup_error
    return None


def _first(source: object, kind: type[Any], *names: str) -> Any:
    """The first of *names* that *source* has with a value of type *kind* (``bool`` excluded)."""
    for name in names:
        value = getattr(source, name, None)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def _model_attributes(model: object) -> dict[str, AttributeValue]:
    return {"gen_ai.request.model": model} if isinstance(model, str) else {}


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
