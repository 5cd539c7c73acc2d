"""Deadline-bound agents: one budget for a whole multi-turn function-calling loop.

Each turn is a [`guarded_stream`][tether.guarded_stream]; the function calls it ends with
run concurrently in a task group; their outputs go back with ``previous_response_id``.
The loop runs inside its own cancel scope, whose deadline is the scope's deadline minus
a small *reserve*: when it fires, the live stream is cancelled on the server (the guard's
protocol) or the running tools are cancelled, within the reserve, and the loop returns an
[`AgentResult`][tether.agents.AgentResult] saying ``reason="deadline"``.

Why the reserve: two cancel scopes with the same deadline expire together, and anyio (like
trio) lets the *outer* one catch the cancellation, so an inner scope with the scope's own
deadline would never catch it and no result could be returned. Ending the loop a little
earlier lets it stop cleanly and still return before the scope's deadline. Any other
cancellation (``scope.cancel()``, an enclosing scope) is never caught here.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
import pydantic
from anyio.lowlevel import checkpoint_if_cancelled

from . import observe
from ._agent_events import AgentEvent, AgentResult, AgentTurn, StopReason
from ._build import StreamOptions, build_guard
from ._cancel import log
from ._errors import fatal_in
from ._scope import as_scope
from ._tools import AgentContext, AgentTool, ToolCall, check_tools
from ._validate import check_count, check_non_negative

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.responses import (
        FunctionToolParam,
        Response,
        ResponseFunctionToolCall,
        ResponseInputParam,
    )

    from ._protocol import ResponseGuard
    from ._scope import Scope

__all__ = ["run_agent"]

OnToolError = Literal["report", "stop", "raise"]


@attrs.define
class _TurnState:
    index: int
    started_at: float
    calls: list[ResponseFunctionToolCall] = attrs.Factory(list[Any])
    records: list[ToolCall | None] = attrs.Factory(list[Any])
    stream: ResponseGuard | None = None
    response: Response | None = None
    node: int = attrs.Factory(observe.new_id)  # this turn's id in progress events

    def freeze(self) -> AgentTurn:
        outcome = None if self.stream is None else self.stream.outcome
        # No records: the calls were not run (the loop stopped first). A None record: the
        # call was cancelled before its task started.
        records = [
            record
            if record is not None
            else ToolCall(
                name=call.name, call_id=call.call_id, arguments=call.arguments, cancelled=True
            )
            for call, record in zip(self.calls, self.records)  # noqa: B905 - records may be []
        ]
        return AgentTurn(
            index=self.index,
            response_id=outcome.response_id if outcome is not None else None,
            status=outcome.status if outcome is not None else None,
            outcome=outcome,
            tool_calls=tuple(records),
            usage=None if self.response is None else self.response.usage,
            started_at=self.started_at,
            ended_at=anyio.current_time(),
        )


class _Agent:
    """The state of one ``run_agent`` call (internal)."""

    def __init__(
        self,
        scope: Scope,
        tools: Mapping[str, AgentTool[..., Any]],
        request: dict[str, Any],
        *,
        max_turns: int,
        max_tokens: int | None,
        on_tool_error: OnToolError,
        deadline: float,
    ) -> None:
        self.scope = scope
        self.tools = tools
        self.request = request
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.on_tool_error = on_tool_error
        self.deadline = deadline
        self.turns: list[AgentTurn] = []
        self.final: Response | None = None
        self.usage = [0, 0, 0]
        self.node = observe.new_id()  # this run's id in progress events

    async def loop(self, first_input: Any, previous_response_id: str | None) -> StopReason:
        turn_input, previous = first_input, previous_response_id
        index = 0
        while True:
            index += 1
            await checkpoint_if_cancelled()  # a spent budget sends no request
            turn = _TurnState(index, anyio.current_time())
            if observe.watched():
                observe.emit(AgentEvent.TurnStarted(id=turn.node, parent=self.node, index=index))
            try:
                with observe.parent(turn.node):  # the turn's stream is its child
                    response = await self._stream(turn, turn_input, previous)
                if response.status == "incomplete":
                    return "incomplete"
                turn.calls = [item for item in response.output if item.type == "function_call"]
                if not turn.calls:
                    return "completed"
                if index >= self.max_turns:
                    return "max_turns"
                if self.max_tokens is not None and self.usage[2] >= self.max_tokens:
                    return "token_budget"
                failure = await self._run_tools(turn)
                if failure is not None:
                    if self.on_tool_error == "raise":
                        raise failure
                    return "tool_error"
            finally:
                self.turns.append(turn.freeze())
                if observe.watched():
                    observe.emit(AgentEvent.TurnEnded(id=turn.node, turn=self.turns[-1]))
            turn_input = [
                {
                    "type": "function_call_output",
                    "call_id": record.call_id,
                    "output": record.output or "",
                }
                for record in self.turns[-1].tool_calls
            ]
            previous = response.id

    async def _stream(self, turn: _TurnState, turn_input: Any, previous: str | None) -> Response:
        request = dict(self.request, input=turn_input)
        if previous is not None:
            request["previous_response_id"] = previous
        turn.stream = build_guard(self.scope, *StreamOptions.split(request))
        async with turn.stream as stream:
            response = await stream.read_to_end()
        turn.response = self.final = response
        if response.usage is not None:
            self.usage[0] += response.usage.input_tokens
            self.usage[1] += response.usage.output_tokens
            self.usage[2] += response.usage.total_tokens
        return response

    async def _run_tools(self, turn: _TurnState) -> Exception | None:
        """Run a turn's calls concurrently; the error that stops the loop, if one does."""
        turn.records = [None] * len(turn.calls)
        failures: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:
                for slot, call in enumerate(turn.calls):
                    tg.start_soon(self._call, turn, slot, call, tg.cancel_scope, failures)
        except BaseExceptionGroup as group:
            fatal = fatal_in(group)
            if fatal is not None:
                raise fatal from None  # Ctrl-C or sys.exit() in a tool: as itself
            raise
        return failures[0] if failures else None

    async def _call(
        self,
        turn: _TurnState,
        slot: int,
        call: ResponseFunctionToolCall,
        siblings: anyio.CancelScope,
        failures: list[Exception],
    ) -> None:
        node = observe.new_id()
        if observe.watched():
            observe.emit(
                AgentEvent.ToolStarted(
                    id=node, parent=turn.node, name=call.name, call_id=call.call_id
                )
            )
        record = ToolCall(
            name=call.name,
            call_id=call.call_id,
            arguments=call.arguments,
            started_at=anyio.current_time(),
        )
        context = AgentContext(
            scope=self.scope,
            turn=turn.index,
            call_id=call.call_id,
            tool_name=call.name,
            deadline=self.deadline,
        )
        try:
            found = self.tools.get(call.name)
            if found is None:
                raise LookupError(
                    f"there is no tool named {call.name!r}; the tools are {sorted(self.tools)}"
                )
            with observe.parent(node):  # what the tool streams is its child
                output = await found.invoke(call.arguments, context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.on_tool_error == "report":
                reported = json.dumps({"error": error})
                log.warning("tool %r failed (reported to the model): %s", call.name, error)
                record = attrs.evolve(record, output=reported, error=error, exception=exc)
            else:
                record = attrs.evolve(record, error=error, exception=exc)
                failures.append(exc)
                siblings.cancel()  # the loop ends: the other calls' results would be wasted
        except BaseException:
            record = attrs.evolve(record, cancelled=True, ended_at=anyio.current_time())
            turn.records[slot] = record
            if observe.watched():
                observe.emit(AgentEvent.ToolEnded(id=node, call=record))
            raise
        else:
            record = attrs.evolve(record, output=output)
        record = attrs.evolve(record, ended_at=anyio.current_time())
        turn.records[slot] = record
        if observe.watched():
            observe.emit(AgentEvent.ToolEnded(id=node, call=record))


async def run_agent(
    scope: Scope | AsyncOpenAI,
    *,
    model: str,
    input: str | ResponseInputParam,  # the Responses API's own name
    tools: Sequence[AgentTool[..., Any] | Callable[..., Any]],
    instructions: str | None = None,
    max_turns: int = 10,
    max_tokens: int | None = None,
    on_tool_error: OnToolError = "report",
    raise_on_deadline: bool = False,
    reserve: float | None = None,
    **create_kwargs: Any,
) -> AgentResult:
    """Run a function-calling loop under the scope's deadline: streams and tools, one budget.

    Each turn streams a response with [`guarded_stream`][tether.guarded_stream]; the
    ``function_call`` items it ends with are run concurrently (async tools awaited, sync
    ones in a worker thread); their outputs go back as ``function_call_output`` items with
    ``previous_response_id``. The loop ends on a turn without function calls.

    **The budget.** The loop's deadline is the scope's, minus ``reserve``. When it comes
    during a stream, the stream is closed and the response cancelled on the server; during
    tools, the running tools are cancelled (they may clean up under their own shield; a
    sync tool cannot be interrupted, the cancel waits for it to return). Nothing is left
    running, and the result says ``reason="deadline"``. The reserve is the time kept
    for that stop, so the result is returned before the scope's own deadline; if stopping
    takes longer, the scope's deadline passes first and its
    [`DeadlineExceeded`][tether.DeadlineExceeded] propagates instead. A cancellation that is
    not the budget's (``scope.cancel()``, an enclosing cancel scope) always propagates.

    Args:
        scope: A [`Scope`][tether.Scope] (its deadline is the budget), or an
            ``openai.AsyncOpenAI`` for no deadline.
        model: The model of every turn.
        input: The first turn's input: a string or a list of input items.
        tools: [`agent_tool`][tether.agent_tool]s, or plain functions (described with ``agent_tool``).
        instructions: The system instructions, sent with every turn (the API does not
            carry them over ``previous_response_id``).
        max_turns: At most this many responses; a last one that still calls tools stops the
            loop with ``reason="max_turns"`` (its calls are not run).
        max_tokens: Stop with ``reason="token_budget"`` once the completed turns used
            this many tokens (``usage.total_tokens`` summed); the turn that crosses it is the last.
        on_tool_error: When a tool raises (or its arguments do not validate):
            ``"report"`` sends ``{"error": "Type: message"}`` to the model as the tool's
            output, and goes on; ``"stop"`` cancels the turn's other calls and returns
            ``reason="tool_error"``; ``"raise"`` cancels them and raises the tool's
            exception, unchanged. Every error is on its [`ToolCall`][tether.agents.ToolCall].
        raise_on_deadline: Do not stop early: let the scope's deadline cancel the loop, so
            that ``open_scope`` raises ``DeadlineExceeded`` (no result is returned).
        reserve: Seconds before the scope's deadline at which the loop stops (default: a
            tenth of the time left when it starts, at most the scope's ``grace``).
        **create_kwargs: More arguments for every turn's request (``temperature``,
            ``tool_choice``, ``parallel_tool_calls``, ``previous_response_id`` for the
            first turn...) and for ``guarded_stream`` (``idle_timeout``...).

    Returns:
        An [`AgentResult`][tether.agents.AgentResult]: the final text, every turn, the stop reason.

    Raises:
        ResponseNotCompleted: A turn's response failed.
        TypeError: A bad argument type, a sync client, or a tool that cannot be described.
        ValueError: An argument out of range, or two tools with the same name. Checked
            before any request is sent.

    Example:
        ```python
        async with tether.open_scope(client, deadline=30) as scope:
            result = await tether.run_agent(
                scope, model="gpt-5", input="Weather in Paris, in F?", tools=[get_weather]
            )
        print(result.reason, result.output_text)
        ```

    Added in version 0.1.
    """
    the_scope = as_scope(scope)
    if not isinstance(model, str) or not model:
        raise (ValueError if isinstance(model, str) else TypeError)(
            f"model must be a non-empty str, got {model!r}"
        )
    if isinstance(input, (bytes, Mapping)) or not isinstance(input, (str, Sequence)):
        raise TypeError(f"input must be a str or a list of input items, got {input!r}")
    if not isinstance(input, str):
        for i, item in enumerate(input):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            if not isinstance(item, (Mapping, pydantic.BaseModel)):
                raise TypeError(f"input[{i}] must be an input item (a dict), got {item!r}")
    registry = check_tools(tools)
    turns = check_count("max_turns", max_turns)
    assert turns is not None
    budget_tokens = check_count("max_tokens", max_tokens, optional=True)
    if on_tool_error not in ("report", "stop", "raise"):
        raise ValueError(
            f"on_tool_error must be 'report', 'stop' or 'raise', got {on_tool_error!r}"
        )
    if not isinstance(raise_on_deadline, bool):
        raise TypeError(f"raise_on_deadline must be a bool, got {raise_on_deadline!r}")
    kept = (
        None
        if reserve is None
        else check_non_negative("reserve", reserve, what="a number of seconds or None")
    )
    if instructions is not None and not isinstance(instructions, str):
        raise TypeError(f"instructions must be a str or None, got {instructions!r}")
    if "stream" in create_kwargs:
        raise ValueError(
            f"run_agent always streams: do not pass stream=, got {create_kwargs['stream']!r}"
        )
    if create_kwargs.get("store") is False:
        raise ValueError(
            "run_agent chains turns with previous_response_id, which needs stored responses: "
            "do not pass store=False"
        )
    previous = create_kwargs.pop("previous_response_id", None)
    request: dict[str, Any] = dict(create_kwargs, model=model)
    params: list[FunctionToolParam] = [t.param for t in registry.values()]
    if params:
        request["tools"] = params
    if instructions is not None:
        request["instructions"] = instructions

    deadline = the_scope.deadline
    budget = math.inf
    if not raise_on_deadline and not math.isinf(deadline):
        left = max(0.0, deadline - anyio.current_time())
        budget = deadline - (min(the_scope.grace, left / 10) if kept is None else kept)
    agent = _Agent(
        the_scope,
        registry,
        request,
        max_turns=turns,
        max_tokens=budget_tokens,
        on_tool_error=on_tool_error,
        deadline=min(budget, deadline),
    )
    reason: StopReason = "deadline"
    if observe.watched():
        observe.emit(
            AgentEvent.Started(
                id=agent.node,
                parent=observe.current_parent(),
                model=model,
                tools=tuple(registry),
                max_turns=turns,
            )
        )
    try:
        with anyio.CancelScope(deadline=budget) as loop_scope, observe.parent(agent.node):
            reason = await agent.loop(input, previous)
    except BaseException as exc:
        if observe.watched():
            observe.emit(AgentEvent.Ended(id=agent.node, result=None, exception=exc))
        raise
    if loop_scope.cancelled_caught:  # our own deadline, and only ours (see the module doc)
        reason = "deadline"
    final = agent.final
    result = AgentResult(
        reason=reason,
        output_text="" if final is None else final.output_text,
        turns=tuple(agent.turns),
        final_response=final,
        input_tokens=agent.usage[0],
        output_tokens=agent.usage[1],
        total_tokens=agent.usage[2],
    )
    if observe.watched():
        observe.emit(AgentEvent.Ended(id=agent.node, result=result))
    return result
