"""Progress events of agents: a run, its turns, its tool calls (public in ``tether.agents``).

[`run_agent`][tether.run_agent] emits them when an observer watches, in the
``tether.observe`` style: frozen records with an ``id`` and a ``parent``. The tree is

- ``AgentStarted``: ``parent`` is whatever the run itself runs under (or ``None``);
- ``TurnStarted``: ``parent`` is the agent's id; the turn's guarded stream is its child
  (its ``StreamStarted.parent`` is the turn's id);
- ``ToolStarted``: ``parent`` is the turn's id; whatever the tool streams or races is its
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

__all__ = ["AgentEnded", "AgentStarted", "ToolEnded", "ToolStarted", "TurnEnded", "TurnStarted"]


@final
@attrs.frozen(kw_only=True)
class AgentStarted:
    """``run_agent`` checked its arguments and is about to send its first turn.

    Example:
        ```python
        if type(event).__name__ == "AgentStarted":
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
class AgentEnded:
    """The run is over: it returned a result, or raised.

    Example:
        ```python
        if type(event).__name__ == "AgentEnded" and event.result is not None:
            print(event.result.stopped_by, event.result.total_tokens)
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
        if type(event).__name__ == "TurnStarted":
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
        if type(event).__name__ == "TurnEnded":
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
        if type(event).__name__ == "ToolStarted":
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
        if type(event).__name__ == "ToolEnded" and event.call.error:
            print(event.call.name, "failed:", event.call.error)
        ```
    """

    id: int
    """The call's id in events."""
    call: ToolCall = attrs.field(eq=False)
    """Its record, as in ``AgentTurn.tool_calls``."""
