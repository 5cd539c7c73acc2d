"""run_agent's arguments, checked before anything is sent, and the request each turn sends.

[`run_agent`][tether.run_agent] checks every argument before its first request leaves
(``tests/test_agent.py::test_bad_arguments_fail_before_any_request``): the model, the first
input, the tools (described with ``agent_tool``), the loop's limits, ``on_tool_error``,
``reserve``, the instructions, and the two request arguments a chained loop cannot take
(``stream``, ``store=False``). What passes is an ``AgentRequest``: the request every turn
sends but for its input, the first turn's ``previous_response_id``, and the loop's limits.
Each turn's request is opened by an ``OpenTurn``: ``open_guarded`` (``tether.guarded_stream``'s
stream) for ``run_agent``, ``tether.temporal.guarded_stream`` for ``tether.temporal.run_agent``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import attrs
import pydantic

from ._build import StreamOptions, build_guard
from ._stream import GuardedStream
from ._tools import AgentTool, check_tools
from ._validate import check_count, check_non_negative

if TYPE_CHECKING:
    from types import TracebackType

    from openai.types.responses import FunctionToolParam, Response, ResponseInputParam

    from ._outcome import StreamOutcome
    from ._scope import Scope

__all__ = [
    "AgentRequest",
    "OnToolError",
    "OpenTurn",
    "TurnStream",
    "check_agent_request",
    "open_guarded",
]

OnToolError = Literal["report", "stop", "raise"]
"""What a tool's exception does to the loop (see ``run_agent``'s ``on_tool_error``)."""


@attrs.frozen
class AgentRequest:
    """run_agent's arguments, checked: what every turn sends, and the loop's limits."""

    request: dict[str, Any]
    """Every turn's request but its ``input`` (and ``previous_response_id``): the model,
    the tools' schemas, the instructions, the rest of ``create_kwargs``."""
    previous_response_id: str | None
    """The first turn's ``previous_response_id``, if the caller chains onto a response."""
    tools: Mapping[str, AgentTool[..., Any]]
    """The tools by name."""
    max_turns: int
    max_tokens: int | None
    on_tool_error: OnToolError
    raise_on_deadline: bool
    reserve: float | None
    """Seconds kept before the scope's deadline, or ``None`` for the default."""


def check_agent_request(
    *,
    model: str,
    first_input: str | ResponseInputParam,
    tools: Sequence[AgentTool[..., Any] | Callable[..., Any]],
    instructions: str | None,
    max_turns: int,
    max_tokens: int | None,
    on_tool_error: OnToolError,
    raise_on_deadline: bool,
    reserve: float | None,
    create_kwargs: Mapping[str, Any],
) -> AgentRequest:
    """Check run_agent's arguments (*first_input* is its ``input``) and build its request.

    Raises:
        TypeError: A bad argument type, or a tool that cannot be described.
        ValueError: An argument out of range, two tools with the same name, ``stream=`` or
            ``store=False``.
    """
    if not isinstance(model, str) or not model:
        raise (ValueError if isinstance(model, str) else TypeError)(
            f"model must be a non-empty str, got {model!r}"
        )
    if isinstance(first_input, (bytes, Mapping)) or not isinstance(first_input, (str, Sequence)):
        raise TypeError(f"input must be a str or a list of input items, got {first_input!r}")
    if not isinstance(first_input, str):
        for i, item in enumerate(first_input):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
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
    rest = dict(create_kwargs)
    previous = rest.pop("previous_response_id", None)
    request: dict[str, Any] = dict(rest, model=model)
    params: list[FunctionToolParam] = [t.param for t in registry.values()]
    if params:
        request["tools"] = params
    if instructions is not None:
        request["instructions"] = instructions
    return AgentRequest(
        request=request,
        previous_response_id=previous,
        tools=registry,
        max_turns=turns,
        max_tokens=budget_tokens,
        on_tool_error=on_tool_error,
        raise_on_deadline=raise_on_deadline,
        reserve=kept,
    )


class TurnStream(Protocol):
    """What a turn streams through: a ``GuardedStream``, or a ``TemporalStream``."""

    @property
    def outcome(self) -> StreamOutcome: ...
    async def __aenter__(self) -> object: ...
    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None, /
    ) -> bool | None: ...
    async def get_final_response(self) -> Response: ...


OpenTurn: TypeAlias = "Callable[[Scope, dict[str, Any]], TurnStream]"
"""Opens a turn's stream on the scope, for the turn's request (create kwargs and options)."""


def open_guarded(scope: Scope, request: dict[str, Any]) -> TurnStream:
    """A turn's stream: ``tether.guarded_stream``'s."""
    return GuardedStream(build_guard(scope, *StreamOptions.split(request)), None)
