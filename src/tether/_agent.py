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

``run_agent`` reads as its steps: its arguments checked and the request every turn sends
built (``_agent_request.py``), the loop's deadline (the reserve), then the loop, with its
progress events and its result (``_Agent.run``). A turn's stream is opened by an
``OpenTurn``: ``tether.guarded_stream``'s here, ``tether.temporal.guarded_stream``'s in
``tether.temporal.run_agent`` (``run_checked`` is the loop both call).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.lowlevel import checkpoint_if_cancelled

from . import observe
from ._agent_events import AgentEvent, AgentResult, AgentTurn, StopReason, ToolCall
from ._agent_request import AgentRequest, OnToolError, check_agent_request, open_guarded
from ._cancel import log
from ._errors import fatal_in
from ._scope import as_scope
from ._tools import AgentContext

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from openai import AsyncOpenAI
    from openai.types.responses import Response, ResponseFunctionToolCall, ResponseInputParam

    from ._agent_request import OpenTurn
    from ._outcome import StreamOutcome
    from ._scope import Scope
    from ._tools import AgentTool

__all__ = ["run_agent", "run_checked"]


@attrs.define
class _TurnState:
    index: int
    started_at: float
    calls: list[ResponseFunctionToolCall] = attrs.Factory(list[Any])
    records: list[ToolCall | None] = attrs.Factory(list[Any])
    outcome: StreamOutcome | None = None
    response: Response | None = None
    node: int = attrs.Factory(observe.new_id)  # this turn's id in progress events

    def freeze(self) -> AgentTurn:
        outcome = self.outcome
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
        self, scope: Scope, checked: AgentRequest, *, deadline: float, open_turn: OpenTurn
    ) -> None:
        self.scope = scope
        self.open_turn = open_turn
        self.tools = checked.tools
        self.request = checked.request
        self.previous_response_id = checked.previous_response_id
        self.max_turns = checked.max_turns
        self.max_tokens = checked.max_tokens
        self.on_tool_error: OnToolError = checked.on_tool_error
        self.deadline = deadline
        self.turns: list[AgentTurn] = []
        self.final: Response | None = None
        self.usage = [0, 0, 0]
        self.node = observe.new_id()  # this run's id in progress events

    async def run(self, first_input: Any, budget: float) -> AgentResult:
        """The loop under its own deadline, *budget*, between its Started and Ended events."""
        reason: StopReason = "deadline"
        if observe.watched():
            observe.emit(
                AgentEvent.Started(
                    id=self.node,
                    parent=observe.current_parent(),
                    model=self.request["model"],
                    tools=tuple(self.tools),
                    max_turns=self.max_turns,
                )
            )
        try:
            with anyio.CancelScope(deadline=budget) as loop_scope, observe.parent(self.node):
                reason = await self.loop(first_input, self.previous_response_id)
        except BaseException as exc:
            if observe.watched():
                observe.emit(AgentEvent.Ended(id=self.node, result=None, exception=exc))
            raise
        if loop_scope.cancelled_caught:  # our own deadline, and only ours (see the module doc)
            reason = "deadline"
        result = self.result(reason)
        if observe.watched():
            observe.emit(AgentEvent.Ended(id=self.node, result=result))
        return result

    def result(self, reason: StopReason) -> AgentResult:
        """What ``run_agent`` returns once the loop stopped for *reason*."""
        final = self.final
        return AgentResult(
            reason=reason,
            output_text="" if final is None else final.output_text,
            turns=tuple(self.turns),
            final_response=final,
            input_tokens=self.usage[0],
            output_tokens=self.usage[1],
            total_tokens=self.usage[2],
        )

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
        stream = self.open_turn(self.scope, request)
        try:
            async with stream:
                response = await stream.get_final_response()
        finally:
            with contextlib.suppress(RuntimeError):  # it never opened
                turn.outcome = stream.outcome
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
            exception, unchanged. Every error is on its [`ToolCall`][tether.agents.AgentResult.ToolCall].
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
    checked = check_agent_request(
        model=model,
        first_input=input,
        tools=tools,
        instructions=instructions,
        max_turns=max_turns,
        max_tokens=max_tokens,
        on_tool_error=on_tool_error,
        raise_on_deadline=raise_on_deadline,
        reserve=reserve,
        create_kwargs=create_kwargs,
    )
    return await run_checked(the_scope, checked, input, open_guarded)


async def run_checked(
    scope: Scope, checked: AgentRequest, first_input: Any, open_turn: OpenTurn
) -> AgentResult:
    """The loop of a checked request, each turn's stream opened with *open_turn*."""
    budget = _loop_deadline(scope, checked)
    agent = _Agent(scope, checked, deadline=min(budget, scope.deadline), open_turn=open_turn)
    return await agent.run(first_input, budget)


def _loop_deadline(scope: Scope, checked: AgentRequest) -> float:
    """The loop's deadline: the scope's minus the reserve (``inf``: none, or
    ``raise_on_deadline``, which lets the scope's own deadline stop the loop)."""
    deadline = scope.deadline
    if checked.raise_on_deadline or math.isinf(deadline):
        return math.inf
    left = max(0.0, deadline - anyio.current_time())
    kept = checked.reserve
    return deadline - (min(scope.grace, left / 10) if kept is None else kept)
