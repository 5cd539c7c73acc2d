"""A tool's description derived from its function: name, docstring, JSON schema (pydantic).

The JSON schema of a function's parameters comes from its signature: a ``TypedDict`` built
from the annotations (with the docstring's ``Args:`` as descriptions), validated by a pydantic
``TypeAdapter``, so the arguments the model sends are checked by the very schema it was given.
A schema is made strict (every object closed, every property required) when the Responses
API's strict mode can take it.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from typing_extensions import NotRequired, TypedDict

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["describe", "is_async"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the API accepts as a function name
_SECTIONS = frozenset(
    {"Args", "Arguments", "Parameters", "Params", "Returns", "Return", "Yields", "Raises"}
    | {"Example", "Examples", "Note", "Notes", "Attributes", "Warning", "Warnings"}
)
_ARG_SECTIONS = frozenset({"Args", "Arguments", "Parameters", "Params"})
_ARG_ENTRY = re.compile(r"^(\s+)\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - a callable object's method
    return call is not None and inspect.iscoroutinefunction(call)


def _parse_docstring(doc: str | None) -> tuple[str | None, dict[str, str]]:
    """A Google-style docstring's summary (the text before any section) and ``Args:`` entries."""
    if not doc:
        return None, {}
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    indent: int | None = None
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        header = line.rstrip()
        if header.endswith(":") and header[:-1] in _SECTIONS:
            section, indent, current = header[:-1], None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in _ARG_SECTIONS:
            continue
        entry = _ARG_ENTRY.match(line)
        if entry is not None and (indent is None or len(entry.group(1)) == indent):
            indent = len(entry.group(1))
            current = name = entry.group(2)
            params[name] = entry.group(3).strip()
        elif current is not None and line.strip():
            params[current] = f"{params[current]} {line.strip()}".strip()
    text = "\n".join(summary).strip()
    return text or None, params


def _annotated(annotation: Any, field: dict[str, Any]) -> Any:
    """``Annotated[annotation, Field(**field)]``, the function's own metadata winning."""
    if not field:
        return annotation
    info = pydantic.Field(**field)
    if getattr(annotation, "__metadata__", None) is not None:  # already Annotated[...]
        base, *metadata = annotation.__origin__, *annotation.__metadata__
        return Annotated[(base, info, *metadata)]  # pyright: ignore[reportInvalidTypeArguments]
    return Annotated[annotation, info]


_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "not", "additionalProperties")


def _subschemas(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for key in _SCHEMA_MAPS:
        mapping: dict[str, dict[str, Any]] = node.get(key) or {}
        found.extend((f"{key}.{name}", sub) for name, sub in mapping.items())
    for key in _SCHEMA_LISTS:
        found.extend((f"{key}[{i}]", sub) for i, sub in enumerate(node.get(key) or ()))
    for key in _SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            found.append((key, node[key]))
    return found


def _strict_problem(node: dict[str, Any], path: str = "parameters") -> str | None:
    """Why this schema cannot be sent in strict mode, or None if it can."""
    if not node:
        return f"{path} has no type (annotate it)"
    if node.get("type") == "object" or "properties" in node:
        if isinstance(node.get("additionalProperties"), dict):
            return f"{path} is an open mapping (strict mode needs fixed keys)"
        missing = set(node.get("properties", {})) - set(node.get("required", ()))
        if missing:
            return (
                f"{path} has optional keys {sorted(missing)} (strict mode needs every key required)"
            )
    for where, sub in _subschemas(node):
        problem = _strict_problem(sub, f"{path}.{where}")
        if problem is not None:
            return problem
    return None


def _close_objects(node: dict[str, Any]) -> dict[str, Any]:
    """A copy with ``additionalProperties: false`` on every object (strict mode needs it)."""
    node = dict(node)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            node[key] = {k: _close_objects(v) for k, v in node[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [_close_objects(v) for v in node[key]]
    for key in _SCHEMA_VALUES:
        if isinstance(node.get(key), dict):
            node[key] = _close_objects(node[key])
    return node


def describe(
    fn: Callable[..., Any],
    name: str | None,
    description: str | None,
    strict: bool | None,
    *,
    context_type: type,
) -> dict[str, Any]:
    """What ``AgentTool`` is built from: the name, description, JSON schema of the
    parameters (strict when it can be), the pydantic adapter that validates the model's
    arguments, and which parameter receives the *context_type* (``AgentContext``)."""
    if not callable(fn):
        raise TypeError(f"a tool must be a function, got {fn!r}")
    tool_name = name if name is not None else getattr(fn, "__name__", None)
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise ValueError(
            f"a tool name must be 1-64 letters, digits, '_' or '-', got {tool_name!r}"
            + ("" if name is not None else f" for {fn!r}: pass name=")
        )
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise TypeError(f"cannot resolve the annotations of tool {tool_name!r}: {exc}") from exc
    summary, docs = _parse_docstring(inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    positional: list[str] = []
    context: str | None = None
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"tool {tool_name!r} cannot take *{param.name} or **{param.name}: "
                "the model calls it with named arguments"
            )
        if param.annotation is context_type:
            context = param.name
            continue
        annotation = Any if param.annotation is param.empty else param.annotation
        field: dict[str, Any] = {}
        if param.name in docs:
            field["description"] = docs[param.name]
        if param.default is not param.empty:
            field["default"] = param.default
        annotation = _annotated(annotation, field)
        fields[param.name] = annotation if param.default is param.empty else NotRequired[annotation]
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(param.name)
    arguments = TypedDict(tool_name, fields)  # type: ignore[misc]  # pyright: ignore[reportArgumentType]
    arguments = pydantic.with_config(pydantic.ConfigDict(extra="forbid"))(arguments)
    try:
        adapter = pydantic.TypeAdapter[dict[str, Any]](arguments)  # pyright: ignore[reportArgumentType]
        schema = adapter.json_schema()
    except pydantic.PydanticUserError as exc:
        raise TypeError(f"cannot derive a JSON schema for tool {tool_name!r}: {exc}") from exc
    problem = _strict_problem(schema)
    if strict and problem is not None:
        raise ValueError(f"tool {tool_name!r} cannot be strict: {problem}")
    use_strict = problem is None if strict is None else strict
    return {
        "name": tool_name,
        "description": summary if description is None else description,
        "parameters": _close_objects(schema) if use_strict else schema,
        "strict": use_strict,
        "adapter": adapter,
        "context": context,
        "positional": tuple(positional),
    }
