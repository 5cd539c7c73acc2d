"""``tether.otel``'s stream and cancel spans (``chat {model}``, ``tether.cancel``) and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from opentelemetry.trace import SpanKind, Status, StatusCode

from ._otel_spans import SYSTEM, receipt_attributes, stream_error

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from . import observe
    from ._otel_spans import Instruments, SpanTree
    from ._outcome import StreamOutcome

__all__ = ["StreamSpans"]


@final
class StreamSpans:
    """Spans and metrics of guarded streams and their server-side cancels."""

    __slots__ = ("_instruments", "_tree")

    def __init__(self, tree: SpanTree, instruments: Instruments) -> None:
        self._tree = tree
        self._instruments = instruments

    def stream_started(self, event: observe.StreamEvent.Started) -> None:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.system": SYSTEM,
            "gen_ai.provider.name": SYSTEM,
            "gen_ai.operation.name": "chat",
            "tether.background": event.background,
            "tether.resumed": event.resumed,
        }
        if event.model is not None:
            attributes["gen_ai.request.model"] = event.model
        name = "chat" if event.model is None else f"chat {event.model}"
        node = self._tree.start(event, name, "stream", attributes, client=True)
        response_id = getattr(event.stream, "response_id", None)  # known when resuming
        if isinstance(response_id, str):
            self._tree.note_response(node, response_id)

    def stream_opened(self, event: observe.StreamEvent.Opened) -> None:
        node = self._tree.nodes.get(event.id)
        if node is not None:
            self._tree.note_response(node, event.response_id)

    def cancel_started(self, event: observe.StreamEvent.CancelStarted) -> None:
        node = self._tree.nodes.get(event.id)
        if node is None:
            return
        node.cancel = self._tree.tracer.start_span(
            "tether.cancel",
            context=node.context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.system": SYSTEM,
                "gen_ai.response.id": event.response_id,
                "tether.end_reason": event.reason,
            },
        )

    def cancel_ended(self, event: observe.StreamEvent.CancelEnded) -> None:
        node = self._tree.nodes.get(event.id)
        if node is None or node.cancel is None:
            return
        span, node.cancel = node.cancel, None
        receipt_attributes(span, event.receipt)
        if not event.receipt.stopped:
            span.set_attribute("error.type", "cancel_unconfirmed")
            span.set_status(Status(StatusCode.ERROR, event.receipt.error or "cancel unconfirmed"))
        span.end()

    def cancel_overruled(self, event: observe.StreamEvent.CancelOverruled) -> None:
        receipt = event.receipt
        self._instruments.overruled.add(1, {"tether.cancel.status": receipt.status or "unknown"})

    def stream_ended(self, event: observe.StreamEvent.Ended) -> None:
        node = self._tree.nodes.pop(event.id, None)
        outcome = event.outcome
        self.record_stream(outcome)
        if node is None:
            return
        span = node.span
        if node.cancel is not None:  # pragma: no cover - StreamEvent.CancelEnded always comes first
            node.cancel.end()
        if node.response_id is None and outcome.response_id is not None:
            self._tree.note_response(node, outcome.response_id)
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
            receipt_attributes(span, outcome.receipt)
        error = stream_error(outcome)
        if error is not None:
            span.set_attribute("error.type", error[0])
            span.set_status(Status(StatusCode.ERROR, error[1]))
        span.end()

    def record_stream(self, outcome: StreamOutcome) -> None:
        base: dict[str, AttributeValue] = {"tether.end_reason": outcome.reason}
        if outcome.model is not None:
            base["gen_ai.request.model"] = outcome.model
        self._instruments.stream_duration.record(outcome.duration, base)
        receipt = outcome.receipt
        if receipt is not None and receipt.kind != "none":
            cancel = dict(base, **{"tether.cancel.status": receipt.status or "unknown"})
            cancel["tether.cancel.kind"] = receipt.kind
            self._instruments.cancels.add(1, cancel)
            if receipt.kind == "server":
                self._instruments.cancel_duration.record(receipt.latency, cancel)
                if not receipt.stopped:
                    self._instruments.unconfirmed.add(1, cancel)
        usage = outcome.usage
        if usage is not None:
            tokens: dict[str, AttributeValue] = {
                "gen_ai.system": SYSTEM,
                "gen_ai.operation.name": "chat",
            }
            if outcome.model is not None:
                tokens["gen_ai.request.model"] = outcome.model
            self._instruments.tokens.record(
                usage.input_tokens, dict(tokens, **{"gen_ai.token.type": "input"})
            )
            self._instruments.tokens.record(
                usage.output_tokens, dict(tokens, **{"gen_ai.token.type": "output"})
            )
