"""The span tree of ``tether.otel``: live spans by event id, the instruments, and the attributes.

Each progress event with an ``id`` that starts something (a stream, a race, an attempt, an
agent, a turn, a tool call) opens a `SpanNode`; its ``parent`` id finds the span it is the
child of. `SpanTree` keeps the nodes still open, and ends a node's children with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from opentelemetry import trace
from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Meter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

    from ._outcome import CancelReceipt, StreamOutcome

__all__ = [
    "ERROR_REASONS",
    "HEDGE",
    "SYSTEM",
    "Instruments",
    "SpanNode",
    "SpanTree",
    "first_of",
    "model_attributes",
    "receipt_attributes",
    "stream_error",
]

SYSTEM = "openai"
HEDGE = "silence"  # the trigger of an attempt started because the previous one was silent
ERROR_REASONS = frozenset({"exception", "failed", "stalled"})
"""End reasons that are failures. Every other one is a normal end or a stop the user asked
for (``break``, ``deadline``, ``race_lost``, ``explicit``, ``scope_cancelled``...)."""
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


@final
class SpanNode:
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
class SpanTree:
    """The spans still open, by the id of the event that started them."""

    __slots__ = ("nodes", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.nodes: dict[int, SpanNode] = {}

    def start(
        self,
        event: Any,
        name: str,
        kind: str,
        attributes: dict[str, AttributeValue],
        *,
        client: bool = False,
    ) -> SpanNode:
        parent: int | None = event.parent
        above = None if parent is None else self.nodes.get(parent)
        span = self.tracer.start_span(
            name,
            context=None if above is None else above.context,  # a root joins the current trace
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=attributes,
        )
        node = self.nodes[event.id] = SpanNode(span, kind, parent)
        if above is not None:
            above.children.append(event.id)
        return node

    def end(self, node: SpanNode) -> None:
        """End a race's, agent's, turn's or tool's span, and any child left open under it.

        A child whose end event never came (an attempt that was started, then skipped) is
        ended with its parent, marked ``tether.abandoned``, so no span is left open forever.
        """
        for child_id in node.children:
            child = self.nodes.pop(child_id, None)
            if child is not None:
                child.span.set_attribute("tether.abandoned", True)
                if child.cancel is not None:
                    child.cancel.end()
                self.end(child)
        node.span.end()

    def note_response(self, node: SpanNode, response_id: str) -> None:
        """A stream got its id: so did the attempt or turn it is the one stream of."""
        node.response_id = response_id
        node.span.set_attribute("gen_ai.response.id", response_id)
        above = None if node.parent is None else self.nodes.get(node.parent)
        if above is not None and above.kind in ("attempt", "turn") and above.response_id is None:
            above.response_id = response_id
            above.span.set_attribute("gen_ai.response.id", response_id)


@final
class Instruments:
    """The metrics ``tether.otel`` records, made on one meter."""

    def __init__(self, meter: Meter) -> None:
        self.cancels = meter.create_counter(
            "tether.cancels", "{cancel}", "Responses tether stopped early, by reason and status."
        )
        self.unconfirmed = meter.create_counter(
            "tether.cancels.unconfirmed",
            "{cancel}",
            "Server-side cancels the server did not confirm within grace: responses that "
            "may still be generating (alert on it).",
        )
        self.overruled = meter.create_counter(
            "tether.cancels.overruled",
            "{cancel}",
            "Server-side cancels answered cancelled that the server did not honour: the "
            "response went on and completed (billed), or was still generating (alert on it).",
        )
        self.cancel_duration = meter.create_histogram(
            "tether.cancel.duration",
            "s",
            "From the first cancel request to the server's answer (or to giving up).",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.stream_duration = meter.create_histogram(
            "tether.stream.duration",
            "s",
            "From a guarded stream's request to the end of its cleanup.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used by the responses that reported usage.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.hedges_started = meter.create_counter(
            "tether.hedges.started",
            "{attempt}",
            "Race attempts started because the previous one stayed silent for the stagger.",
        )
        self.hedges_won = meter.create_counter(
            "tether.hedges.won", "{attempt}", "Hedged attempts that won their race."
        )


def receipt_attributes(span: Span, receipt: CancelReceipt) -> None:
    span.set_attribute("tether.cancel.kind", receipt.kind)
    span.set_attribute("tether.cancel.status", receipt.status or "unknown")
    span.set_attribute("tether.cancel.attempts", receipt.attempts)
    span.set_attribute("tether.cancel.stopped", receipt.stopped)
    if receipt.kind == "server":
        span.set_attribute("tether.cancel.latency", receipt.latency)


def stream_error(outcome: StreamOutcome) -> tuple[str, str] | None:
    """``(error.type, description)`` when a stream's end is a failure, else ``None``."""
    if outcome.reason in ERROR_REASONS:
        return outcome.reason, f"the stream ended: {outcome.reason}"
    receipt = outcome.receipt
    if receipt is not None and not receipt.stopped:
        return "cancel_unconfirmed", receipt.error or "the server did not confirm the cancel"
    if outcome.cleanup_error is not None:
        return "cleanup_error", outcome.cleanup_error
    return None


def first_of(source: object, kind: type[Any], *names: str) -> Any:
    """The first of *names* that *source* has with a value of type *kind* (``bool`` excluded)."""
    for name in names:
        value = getattr(source, name, None)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def model_attributes(model: object) -> dict[str, AttributeValue]:
    return {"gen_ai.request.model": model} if isinstance(model, str) else {}
