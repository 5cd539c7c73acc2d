"""What agents report: their result, its turns, and progress events (public in ``tether.agents``).

[`run_agent`][tether.run_agent] returns an ``AgentResult`` (why it stopped, the turns, the
tokens), and emits the progress events below.


[`run_agent`][tether.run_agent] emits them when an observer watches, in the
``tether.observe`` style: frozen records with an ``id`` and a ``parent``. The tree is

- ``AgentEvent.Started``: ``parent`` is whatever the run itself runs under (or ``None``);
- ``AgentEvent.TurnStarted``: ``parent`` is the agent's id; the turn's guarded stream is its child
  (its ``StreamStarted.parent`` is the turn's id);
- ``AgentEvent.ToolStarted``: ``parent`` is the turn's id; whatever the tool streams or races is its
  child.

Every ``...Started`` is followed by the ``...Ended`` of the same ``id``, however the
block is left (a deadline, a cancellation, an exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, final

import attrs

if TYPE_CHECKING:
    from openai.types.responses import Response, ResponseUsage

    from ._outcome import StreamOutcome


StopReason = Literal[
    "completed", "incomplete", "deadline", "max_turns", "token_budget", "tool_error"
]
"""Why an agent's loop ended; public as ``AgentResult.Reason``."""


@final
@attrs.frozen(kw_only=True)
class AgentResult:
    """How an agent's loop ended, every turn of it, and what it cost.

    Example:
        ```python
        result = await tether.run_agent(scope, model="gpt-5", input=q, tools=[search])
        if result.reason == "completed":
            print(result.output_text)
        print(len(result.turns), result.total_tokens)
        ```
    """

    Reason = StopReason
    """Why an agent's loop ended (what [`reason`][tether.agents.AgentResult.reason] says):
    annotate with ``tether.agents.AgentResult.Reason``.

    - ``completed``: a turn answered without function calls (the final message).
    - ``incomplete``: a turn ended ``incomplete`` (``max_output_tokens``, content filter).
    - ``deadline``: the scope's deadline (minus the reserve) came; nothing was left running.
    - ``max_turns``: ``max_turns`` responses were made and the last one still called tools.
    - ``token_budget``: the tokens used reached ``max_tokens``.
    - ``tool_error``: a tool raised, with ``on_tool_error="stop"``.
    """

    @final
    @attrs.frozen(kw_only=True)
    class ToolCall:
        """One function call the model made, and what became of it (``turn.tool_calls``,
        ``result.tool_calls``).

        Example:
            ```python
            for call in result.tool_calls:
                print(call.name, call.arguments, call.output or call.error, f"{call.duration:.2f}s")
            ```
        """

        name: str
        """The function the model called."""
        call_id: str
        """The model's ``call_id`` for it."""
        arguments: str
        """The arguments, as the JSON string the model sent."""
        output: str | None = None
        """What was sent back to the model: the tool's result (a string, or JSON), or with
        ``on_tool_error="report"`` the error as ``{"error": "..."}``; ``None`` if nothing was sent."""
        error: str | None = None
        """``"ExceptionType: message"`` if the tool raised (or its arguments did not validate)."""
        exception: Exception | None = attrs.field(default=None, eq=False, repr=False)
        """The exception the tool raised, if any."""
        cancelled: bool = False
        """Whether the call was cancelled before it returned (the deadline, a sibling's error, or
        an enclosing cancel scope)."""
        started_at: float = 0.0
        """When the call started (``anyio.current_time()``)."""
        ended_at: float = 0.0
        """When it returned, raised or was cancelled."""

        @property
        def duration(self) -> float:
            """Seconds the call ran."""
            return self.ended_at - self.started_at

    @final
    @attrs.frozen(kw_only=True)
    class Turn:
        """One turn of an agent (``result.turns``): a guarded response, then the function calls it
        asked for.

        Example:
            ```python
            for turn in result.turns:
                print(turn.index, turn.status, [call.name for call in turn.tool_calls])
            ```
        """

        index: int
        """1 for the first response, then 2, 3..."""
        response_id: str | None
        """The response's id (``None`` if it never got one)."""
        status: str | None
        """The response's last known status: ``completed``, or ``cancelled`` if the deadline
        came while it streamed."""
        outcome: StreamOutcome | None
        """How its guarded stream ended (see [`StreamOutcome`][tether.StreamOutcome])."""
        tool_calls: tuple[AgentResult.ToolCall, ...] = ()
        """The function calls run for this turn, in the order the model made them. The calls of
        a turn after which the loop stops (``max_turns``, ``token_budget``) are not run."""
        usage: ResponseUsage | None = attrs.field(default=None, eq=False, repr=False)
        """The response's token usage, when it completed."""
        started_at: float = 0.0
        """When the turn started (``anyio.current_time()``)."""
        ended_at: float = 0.0
        """When its last tool returned (or the turn was stopped)."""

    reason: StopReason
    """Why the loop ended (see [`AgentResult.Reason`][tether.agents.AgentResult.Reason])."""
    output_text: str
    """The text of the last completed response: the answer when ``reason`` is
    ``completed``; often empty otherwise (a turn that called tools)."""
    turns: tuple[AgentResult.Turn, ...]
    """Every turn, in order, the one interrupted by the deadline included."""
    final_response: Response | None = attrs.field(default=None, eq=False, repr=False)
    """The last completed response (``None`` if none completed)."""
    input_tokens: int = 0
    """Input tokens over the completed responses."""
    output_tokens: int = 0
    """Output tokens over the completed responses."""
    total_tokens: int = 0
    """``input_tokens + output_tokens``, as the API counts them; a response cancelled
    mid-stream reports no usage and is not counted."""

    @property
    def tool_calls(self) -> tuple[AgentResult.ToolCall, ...]:
        """Every function call of every turn, in order."""
        return tuple(call for turn in self.turns for call in turn.tool_calls)


@final
class AgentEvent:
    """An agent's progress events, one record per step, in this order.

    ``Started``; per turn, ``TurnStarted`` (then its guarded stream's events, with ``parent`` =
    the turn's id), per function call ``ToolStarted`` and ``ToolEnded``, then ``TurnEnded``;
    last ``Ended``. A namespace: the records are its attributes (``AgentEvent.ToolEnded``); it
    is not their base class.

    Example:
        ```python
        from tether.agents import AgentEvent

        def show(event: object) -> None:
            if isinstance(event, AgentEvent.ToolEnded):
                print(event.call.name, event.call.duration)
        ```
    """

    __slots__ = ()

    @final
    @attrs.frozen(kw_only=True)
    class Started:
        """``run_agent`` checked its arguments and is about to send its first turn.

        Example:
            ```python
            if isinstance(event, AgentEvent.Started):
                print("agent", event.id, event.model, event.tools)
            ```
        """

        id: int
        """This run's id in events."""
        parent: int | None
        """What the run itself runs under (a tool call of another agent...), if anything."""
        model: str
        """The model of every turn."""
        tools: tuple[str, ...]
        """The names of the tools the model may call."""
        max_turns: int
        """At most this many turns."""

    @final
    @attrs.frozen(kw_only=True)
    class Ended:
        """The run is over: it returned a result, or raised.

        Example:
            ```python
            if isinstance(event, AgentEvent.Ended) and event.result is not None:
                print(event.result.reason, event.result.total_tokens)
            ```
        """

        id: int
        """The run's id in events."""
        result: AgentResult | None = attrs.field(eq=False)
        """What ``run_agent`` returned; ``None`` if it raised."""
        exception: BaseException | None = attrs.field(default=None, eq=False)
        """What it raised instead (a cancellation included), if it did."""

    @final
    @attrs.frozen(kw_only=True)
    class TurnStarted:
        """A turn begins: its response is about to be requested.

        Example:
            ```python
            if isinstance(event, AgentEvent.TurnStarted):
                print("turn", event.index, "of agent", event.parent)
            ```
        """

        id: int
        """This turn's id in events: its guarded stream and tool calls have it as ``parent``."""
        parent: int
        """The agent's id."""
        index: int
        """1 for the first turn, then 2, 3..."""

    @final
    @attrs.frozen(kw_only=True)
    class TurnEnded:
        """A turn is over: its response ended and the tools it asked for returned (or not).

        Example:
            ```python
            if isinstance(event, AgentEvent.TurnEnded):
                print(event.turn.status, [call.name for call in event.turn.tool_calls])
            ```
        """

        id: int
        """The turn's id in events."""
        turn: AgentResult.Turn = attrs.field(eq=False)
        """Its record, as in ``AgentResult.turns``."""

    @final
    @attrs.frozen(kw_only=True)
    class ToolStarted:
        """A function call the model made is about to run.

        Example:
            ```python
            if isinstance(event, AgentEvent.ToolStarted):
                print("calling", event.name, event.call_id)
            ```
        """

        id: int
        """This call's id in events."""
        parent: int
        """The turn's id."""
        name: str
        """The function the model called."""
        call_id: str
        """The model's ``call_id`` for it."""

    @final
    @attrs.frozen(kw_only=True)
    class ToolEnded:
        """A function call returned, raised, or was cancelled.

        Example:
            ```python
            if isinstance(event, AgentEvent.ToolEnded) and event.call.error:
                print(event.call.name, "failed:", event.call.error)
            ```
        """

        id: int
        """The call's id in events."""
        call: AgentResult.ToolCall = attrs.field(eq=False)
        """Its record, as in ``AgentTurn.tool_calls``."""


AgentTurn = AgentResult.Turn
"""Inside tether: one turn's record (public as ``AgentResult.Turn``)."""
ToolCall = AgentResult.ToolCall
"""Inside tether: one function call's record (public as ``AgentResult.ToolCall``)."""
