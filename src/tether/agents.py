"""Agents' progress events: what [`run_agent`][tether.run_agent] tells observers.

[`tether.run_agent`][tether.run_agent] and [`tether.agent_tool`][tether.agent_tool] are in ``tether``;
this module holds their records (``AgentResult``, ``AgentTurn``, ``ToolCall``, ``AgentTool``,
``AgentContext``, ``StopReason``) and the events an agent emits to ``tether.observe``
observers, in this order:

- ``AgentStarted(id, parent, model, tools, max_turns)``;
- per turn, ``TurnStarted(id, parent=agent id, index)``, then its guarded stream's events
  (``StreamStarted``... with ``parent`` = the turn's id), then per function call
  ``ToolStarted(id, parent=turn id, name, call_id)`` and ``ToolEnded(id, call)`` (what the
  tool streams or races has the call's id as ``parent``), then ``TurnEnded(id, turn)``;
- ``AgentEnded(id, result, exception)``.

Example:
    ```python
    from tether.agents import ToolEnded

    def show(event):
        if isinstance(event, ToolEnded):
            print(event.call.name, event.call.duration, event.call.error)

    with tether.observe.observing(show):
        await tether.run_agent(scope, model="gpt-5", input=question, tools=[search])
    ```
"""

from __future__ import annotations

from ._agent import AgentResult as AgentResult
from ._agent import AgentTurn as AgentTurn
from ._agent import StopReason as StopReason
from ._agent_events import AgentEnded as AgentEnded
from ._agent_events import AgentStarted as AgentStarted
from ._agent_events import ToolEnded as ToolEnded
from ._agent_events import ToolStarted as ToolStarted
from ._agent_events import TurnEnded as TurnEnded
from ._agent_events import TurnStarted as TurnStarted
from ._tools import AgentContext as AgentContext
from ._tools import AgentTool as AgentTool
from ._tools import ToolCall as ToolCall

__all__ = [
    "AgentContext",
    "AgentEnded",
    "AgentResult",
    "AgentStarted",
    "AgentTurn",
    "StopReason",
    "Tool",
    "ToolCall",
    "ToolEnded",
    "ToolStarted",
    "TurnEnded",
    "TurnStarted",
]


def _claim_public_names() -> None:
    """Public classes say they come from ``tether.agents``, not from their private module."""
    for name in __all__:
        obj: object = globals()[name]
        if isinstance(obj, type):
            obj.__module__ = __name__


_claim_public_names()
