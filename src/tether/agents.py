"""Agents: the records of [`run_agent`][tether.run_agent] and the events it tells observers.

[`tether.run_agent`][tether.run_agent] and [`tether.agent_tool`][tether.agent_tool] are in ``tether``;
this module holds their records (``AgentResult``, with its ``AgentResult.Turn`` and
``AgentResult.ToolCall``, ``AgentTool``, ``AgentContext``) and the events an agent emits to ``tether.observe``
observers, all nested in [`AgentEvent`][tether.agents.AgentEvent], in this order:

- ``Started(id, parent, model, tools, max_turns)``;
- per turn, ``TurnStarted(id, parent=agent id, index)``, then its guarded stream's events
  (``StreamEvent.Started``... with ``parent`` = the turn's id), then per function call
  ``ToolStarted(id, parent=turn id, name, call_id)`` and ``ToolEnded(id, call)`` (what the
  tool streams or races has the call's id as ``parent``), then ``TurnEnded(id, turn)``;
- ``Ended(id, result, exception)``.

Example:
    ```python
    from tether.agents import AgentEvent

    def show(event):
        if isinstance(event, AgentEvent.ToolEnded):
            print(event.call.name, event.call.duration, event.call.error)

    with tether.observe.observing(show):
        await tether.run_agent(scope, model="gpt-5", input=question, tools=[search])
    ```
"""

from __future__ import annotations

from ._agent_events import AgentEvent as AgentEvent
from ._agent_events import AgentResult as AgentResult
from ._public import claim as _claim
from ._tools import AgentContext as AgentContext
from ._tools import AgentTool as AgentTool

__all__ = [
    "AgentContext",
    "AgentEvent",
    "AgentResult",
    "AgentTool",
]


_claim(__name__, globals(), __all__)
