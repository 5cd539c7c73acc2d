"""Progress events of agents: a run, its turns, its tool calls (public in ``tether.agents``).

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

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from ._agent import AgentResult, AgentTurn
    from ._tools import ToolCall


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
        turn: AgentTurn = attrs.field(eq=False)
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
        call: ToolCall = attrs.field(eq=False)
        """Its record, as in ``AgentTurn.tool_calls``."""
