"""Tools for agents: a function described once (name, docstring, JSON schema), then called.

[`agent_tool`][tether.agent_tool] derives the JSON schema of a function's parameters from its signature
(``_tool_schema.py``: pydantic, a ``TypedDict`` built from the annotations, validated by a
``TypeAdapter``), so the arguments the model sends are validated by the very schema the model
was given.
[`run_agent`][tether.run_agent] calls the tools; a tool may ask for an
[`AgentContext`][tether.agents.AgentContext] to see the time left.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final, overload

import anyio
import attrs
import pydantic_core
from typing_extensions import ParamSpec

from ._tool_schema import describe, is_async
from ._validate import check_str

if TYPE_CHECKING:
    from collections.abc import Callable

    import pydantic
    from openai.types.responses import FunctionToolParam

    from ._scope import Scope

__all__ = ["AgentContext", "AgentTool", "agent_tool", "check_tools"]

P = ParamSpec("P")
R = TypeVar("R")


@final
@attrs.frozen(kw_only=True)
class AgentContext:
    """What a tool may know about the agent calling it: add a parameter annotated with it.

    That parameter is filled in by [`run_agent`][tether.run_agent] and left out of the
    JSON schema the model sees.

    Example:
        ```python
        @tether.agent_tool
        async def search(query: str, ctx: tether.agents.AgentContext) -> list[str]:
            with anyio.move_on_after(ctx.remaining() / 2):  # leave time for an answer
                return await index.search(query)
            return []
        ```
    """

    scope: Scope
    """The scope the agent runs in."""
    turn: int
    """The turn that asked for this call (1 for the first response)."""
    call_id: str
    """The ``call_id`` the model gave this call."""
    tool_name: str
    """The name of the tool being called."""
    deadline: float
    """When the agent's budget ends (``anyio.current_time()`` clock; ``inf`` if none):
    a tool still running then is cancelled."""

    def remaining(self) -> float:
        """Seconds before the agent's budget ends and running tools are cancelled (``inf`` if none)."""
        return max(0.0, self.deadline - anyio.current_time())


@final
class AgentTool(Generic[P, R]):
    """A function the model may call, with its name, description and parameters' JSON schema.

    Made by [`agent_tool`][tether.agent_tool]. Calling it calls the function, unchanged.

    Example:
        ```python
        @tether.agent_tool
        def get_weather(city: str) -> str:
            \"\"\"The current weather in a city.\"\"\"
            return "18C, cloudy"

        print(get_weather.name, get_weather.parameters["required"])  # get_weather ['city']
        get_weather("Paris")  # still a plain function
        ```
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        description: str | None,
        parameters: dict[str, Any],
        strict: bool,
        adapter: pydantic.TypeAdapter[dict[str, Any]],
        context: str | None,
        positional: tuple[str, ...],
    ) -> None:
        functools.update_wrapper(self, fn, updated=())  # its name and docstring, not its __dict__
        self.fn: Callable[P, R] = fn
        """The function itself."""
        self.name = name
        """The name the model calls it by."""
        self.description = description
        """What the model is told the tool does (the docstring's summary by default)."""
        self.parameters = parameters
        """The JSON schema of its arguments, as sent to the API."""
        self.strict = strict
        """Whether the API enforces the schema on the model's arguments (strict mode)."""
        self._adapter = adapter
        self._context = context
        self._positional = positional
        self._is_async = is_async(fn)

    @property
    def param(self) -> FunctionToolParam:
        """The tool as the Responses API takes it: an ``openai.types.responses.FunctionToolParam``."""
        param: FunctionToolParam = {
            "type": "function",
            "name": self.name,
            "parameters": self.parameters,
            "strict": self.strict,
        }
        if self.description is not None:
            param["description"] = self.description
        return param

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tether.agents.AgentTool {self.name!r} strict={self.strict}>"

    async def invoke(self, arguments: str, context: AgentContext) -> str:
        """Validate the model's arguments, call the function, and encode its result.

        Sync functions run in a worker thread that is never abandoned: a cancel waits for
        them to return.
        """
        values = self._adapter.validate_json(arguments or "{}")
        if self._context is not None:
            values[self._context] = context
        args: list[Any] = []
        for name in self._positional:
            if name not in values:
                break
            args.append(values.pop(name))
        fn = cast("Callable[..., Any]", self.fn)
        if self._is_async:
            result = await fn(*args, **values)
        else:
            call = functools.partial(fn, *args, **values)
            result = await anyio.to_thread.run_sync(call, abandon_on_cancel=False)
            if inspect.isawaitable(result):  # a sync function that returns a coroutine
                result = await result
        if isinstance(result, str):
            return result
        return pydantic_core.to_json(result, fallback=str).decode()


@overload
def agent_tool(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> AgentTool[P, R]: ...
@overload
def agent_tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> Callable[[Callable[P, R]], AgentTool[P, R]]: ...
def agent_tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> AgentTool[P, R] | Callable[[Callable[P, R]], AgentTool[P, R]]:
    """Describe a function once, for the model: name, description, and parameters' JSON schema.

    The schema is derived from the signature by pydantic: annotations give the types
    (``Annotated[int, pydantic.Field(ge=0)]``, pydantic models, ``Literal``... all work),
    defaults make a parameter optional, and the docstring's ``Args:`` entries describe
    the parameters. The model's arguments are validated against the same types before
    the call; an invalid call is a tool error. A parameter annotated
    [`AgentContext`][tether.agents.AgentContext] is filled in by the agent and left out of the
    schema. Async functions are awaited; sync ones run in a worker thread.

    Args:
        fn: The function (async or sync). Leave it out to use ``tool`` as a decorator
            with options: ``@tether.agent_tool(name="lookup")``.
        name: The name the model calls it by (default: the function's ``__name__``).
        description: What the tool does, for the model (default: the docstring's summary,
            the text before ``Args:``).
        strict: Have the API enforce the schema (strict mode). ``None`` (default): strict
            whenever the schema allows it, i.e. every parameter is typed and has no default
            (use ``x: int | None`` for an optional value in strict mode).

    Returns:
        An [`AgentTool`][tether.agents.AgentTool], still callable like the function.

    Raises:
        TypeError: *fn* is not callable, takes ``*args``/``**kwargs``, or has annotations
            that cannot be resolved.
        ValueError: The name is not a valid API function name, or ``strict=True`` with a
            schema strict mode cannot express.

    Example:
        ```python
        @tether.agent_tool
        async def get_weather(city: str, units: Literal["C", "F"] = "C") -> str:
            \"\"\"The current weather in a city.

            Args:
                city: The city, e.g. "Paris".
                units: Celsius or Fahrenheit.
            \"\"\"
            return f"18{units}, cloudy"

        lookup = tether.agent_tool(db.lookup, name="lookup_order", description="Find an order.")
        ```

    Added in version 0.1.
    """

    if fn is not None and not callable(fn):
        raise TypeError(f"fn must be a function (async or sync), got {fn!r}")
    check_str("name", name, optional=True)
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a str or None, got {description!r}")
    if strict is not None and not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool or None, got {strict!r}")

    def make(function: Callable[P, R]) -> AgentTool[P, R]:
        if isinstance(function, AgentTool):
            described = cast("AgentTool[P, R]", function)
            if name is description is strict is None:
                return described
            function = described.fn
        return AgentTool(
            function, **describe(function, name, description, strict, context_type=AgentContext)
        )

    if fn is None:
        return make
    return make(fn)


def check_tools(tools: object) -> dict[str, AgentTool[..., Any]]:
    """run_agent's *tools*: each a tool or a function (described here), names unique."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of tools or functions, got {tools!r}")
    found: dict[str, AgentTool[..., Any]] = {}
    for i, item in enumerate(tools):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        if not isinstance(item, AgentTool) and not callable(item):  # pyright: ignore[reportUnknownArgumentType]
            raise TypeError(f"tools[{i}] must be a tether.agent_tool or a function, got {item!r}")
        described: AgentTool[..., Any] = agent_tool(item)  # pyright: ignore[reportUnknownArgumentType]
        if described.name in found:
            raise ValueError(f"two tools are named {described.name!r} (tools[{i}] is the second)")
        found[described.name] = described
    return found
