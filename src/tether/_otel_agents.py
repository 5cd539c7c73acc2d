"""``tether.otel``'s agent spans (``invoke_agent``, ``tether.turn {index}``, ``execute_tool {name}``)."""

from __future__ import annotations

from typing import Any, final

from opentelemetry.trace import Status, StatusCode

from ._otel_spans import SYSTEM, SpanTree

__all__ = ["AgentSpans"]


@final
class AgentSpans:
    """Spans of agent runs, their turns and their tool calls."""

    __slots__ = ("_tree",)

    def __init__(self, tree: SpanTree) -> None:
        self._tree = tree

    def agent_started(self, event: Any) -> None:
        self._tree.start(
            event,
            "invoke_agent",
            "agent",
            {
                "gen_ai.system": SYSTEM,
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.request.model": event.model,
                "tether.agent.tools": list(event.tools),
                "tether.agent.max_turns": event.max_turns,
            },
        )

    def agent_ended(self, event: Any) -> None:
        node = self._tree.nodes.pop(event.id, None)
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
        self._tree.end(node)

    def turn_started(self, event: Any) -> None:
        self._tree.start(
            event, f"tether.turn {event.index}", "turn", {"tether.turn.index": event.index}
        )

    def turn_ended(self, event: Any) -> None:
        node = self._tree.nodes.pop(event.id, None)
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
        self._tree.end(node)

    def tool_started(self, event: Any) -> None:
        self._tree.start(
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

    def tool_ended(self, event: Any) -> None:
        node = self._tree.nodes.pop(event.id, None)
        if node is None:
            return
        span = node.span
        call = event.call
        span.set_attribute("tether.tool.cancelled", call.cancelled)
        if call.error is not None:
            kind = "tool_error" if call.exception is None else type(call.exception).__name__
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, call.error))
        self._tree.end(node)
