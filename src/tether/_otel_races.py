"""``tether.otel``'s race spans (``tether.race``, ``tether.attempt {index}``) and hedge metrics.

Race events are read by attribute, tolerantly (a field missing or of another type is left
out): the observer records what it finds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, final

from opentelemetry.trace import Status, StatusCode

from ._otel_spans import HEDGE, SYSTEM, SpanNode, first_of, model_attributes

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from ._otel_spans import Instruments, SpanTree

__all__ = ["RaceSpans"]


@final
class RaceSpans:
    """Spans of races and their attempts; counts of hedges started and won."""

    __slots__ = ("_instruments", "_tree")

    def __init__(self, tree: SpanTree, instruments: Instruments) -> None:
        self._tree = tree
        self._instruments = instruments

    def race_started(self, event: Any) -> None:
        attributes: dict[str, AttributeValue] = {}
        win = getattr(event, "win", None)
        if win is not None:
            attributes["tether.race.win"] = str(win)
        models: object = getattr(event, "models", None)
        count = (
            len(cast("tuple[object, ...]", models))
            if isinstance(models, tuple)
            else first_of(event, int, "attempts")
        )
        if count is not None:
            attributes["tether.race.attempts"] = count
        stagger = getattr(event, "stagger", None)
        if isinstance(stagger, (int, float)) and not isinstance(stagger, bool):
            attributes["tether.race.stagger"] = float(stagger)
        self._tree.start(event, "tether.race", "race", attributes)

    def attempt_started(self, event: Any) -> None:
        index = getattr(event, "index", None)
        model = getattr(event, "model", None)
        trigger = getattr(event, "trigger", None)
        attributes: dict[str, AttributeValue] = {"gen_ai.system": SYSTEM}
        if isinstance(index, int):
            attributes["tether.attempt.index"] = index
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        if isinstance(trigger, str):
            attributes["tether.attempt.trigger"] = trigger
            attributes["tether.attempt.hedge"] = trigger == HEDGE
        name = "tether.attempt" if index is None else f"tether.attempt {index}"
        node = self._tree.start(event, name, "attempt", attributes)
        node.trigger = trigger if isinstance(trigger, str) else None
        node.model = model if isinstance(model, str) else None
        if trigger == HEDGE:
            self._instruments.hedges_started.add(1, model_attributes(model))

    def attempt_ended(self, event: Any) -> None:
        node = self._tree.nodes.pop(event.id, None)
        if node is None:
            return
        attempt = getattr(event, "attempt", None)
        state = first_of(event, str, "state") or first_of(attempt, str, "state")
        outcome = getattr(event, "outcome", None) or getattr(attempt, "outcome", None)
        response_id = getattr(outcome, "response_id", None)
        if node.response_id is None and isinstance(response_id, str):
            node.response_id = response_id
            node.span.set_attribute("gen_ai.response.id", response_id)
        if state is not None:
            node.span.set_attribute("tether.attempt.state", state)
        if state == "won" and node.trigger == HEDGE:
            self.count_hedge_won(node.parent, node.model)
        if state == "failed":
            node.span.set_attribute("error.type", "attempt_failed")
            node.span.set_status(Status(StatusCode.ERROR, "the attempt failed"))
        self._tree.end(node)

    def count_hedge_won(self, race: int | SpanNode | None, model: object) -> None:
        """Count a hedge that won, once per race (whichever event says it first)."""
        node = self._tree.nodes.get(race) if isinstance(race, int) else race
        if node is not None:
            if node.hedge_won:
                return
            node.hedge_won = True
        self._instruments.hedges_won.add(1, model_attributes(model))

    def race_decided(self, event: Any) -> None:
        node = self._tree.nodes.get(event.id)
        if node is None:
            return
        winner = getattr(event, "winner", None)
        index = winner if isinstance(winner, int) else first_of(winner, int, "index")
        if index is None:
            index = first_of(event, int, "index", "winner_index")
        attributes: dict[str, AttributeValue] = {}
        if index is not None:
            attributes["tether.race.winner"] = index
            node.span.set_attribute("tether.race.winner", index)
        node.span.add_event("tether.race.decided", attributes)
        winner_id = first_of(event, int, "winner_id")
        attempt = None if winner_id is None else self._tree.nodes.get(winner_id)
        if attempt is not None and attempt.trigger == HEDGE:
            self.count_hedge_won(event.id, attempt.model)

    def race_ended(self, event: Any) -> None:
        node = self._tree.nodes.pop(event.id, None)
        if node is None:
            return
        result = getattr(event, "result", None)
        winner = getattr(result, "winner", None)
        if winner is not None:
            index = getattr(winner, "index", None)
            if isinstance(index, int):
                node.span.set_attribute("tether.race.winner", index)
            if getattr(winner, "trigger", None) == HEDGE:
                self.count_hedge_won(node, getattr(winner, "model", None))
        hedges = getattr(result, "hedges", None)
        if isinstance(hedges, int):
            node.span.set_attribute("tether.race.hedges", hedges)
        error = getattr(event, "error", None) or getattr(event, "exception", None)
        if isinstance(error, Exception):
            node.span.set_attribute("error.type", type(error).__name__)
            node.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._tree.end(node)
