"""What a request to the emulator says: its body read as the Responses API reads it.

JSON and error responses, input token counts, the input items as ``input_items`` lists
them, and the check of a follow-up's function call outputs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ._wire import error_body

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._models import EmulatedModel
    from ._run import Run

__all__ = [
    "bool_param",
    "count_input_tokens",
    "create_request",
    "error_response",
    "follow_up",
    "include_obfuscation",
    "input_items",
    "item_resources",
    "json_response",
    "not_found",
    "output_text",
]

_JSON = "application/json"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status, media_type=_JSON)


def error_response(status: int, message: str | None = None, **kw: Any) -> Response:
    return Response(error_body(status, message, **kw), status, media_type=_JSON)


def count_input_tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_input_tokens(item) for item in value)  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return count_input_tokens(value.get("content", value.get("text", value.get("output", ""))))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    return 0


def output_text(output: Any) -> str:
    """The text of a `function_call_output`'s output: a string, or a list of content parts."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(
            str(part.get("text", ""))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            for part in output  # pyright: ignore[reportUnknownVariableType]
            if isinstance(part, dict)
        )
    return json.dumps(output)


def bool_param(value: str | None) -> bool | None:
    return None if value is None else value.lower() == "true"


def include_obfuscation(body: dict[str, Any]) -> bool:
    options: Any = body.get("stream_options")
    if isinstance(options, dict):
        return options.get("include_obfuscation", True) is not False  # pyright: ignore[reportUnknownMemberType]
    return True


def item_resources(body: dict[str, Any], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    """The request's input as `GET /v1/responses/{id}/input_items` lists it (`ItemResource`s)."""
    value: Any = body.get("input")
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    resources: list[dict[str, Any]] = []
    for raw in value:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(raw, dict):
            continue
        item: dict[str, Any] = dict(raw)  # pyright: ignore[reportUnknownArgumentType]
        kind = item.setdefault("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            content = item.get("content")
            if isinstance(content, str):
                part: dict[str, Any] = {"type": "input_text", "text": content}
                if role == "assistant":
                    part = {
                        "type": "output_text",
                        "text": content,
                        "annotations": [],
                        "logprobs": [],
                    }
                content = [part]
            item["content"] = content if isinstance(content, list) else []
            item["role"] = role
        prefix = {"message": "msg", "function_call": "fc"}.get(kind, "item")
        item.setdefault("id", new_id(prefix))
        item.setdefault("status", "completed")
        resources.append(item)
    return resources


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    items: Any = body.get("input")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]  # pyright: ignore[reportUnknownVariableType]


def not_found(response_id: str) -> Response:
    return error_response(404, f"No response found with id '{response_id}'.", param="response_id")


def create_request(
    raw: bytes, models: Mapping[str, EmulatedModel]
) -> tuple[dict[str, Any], str, EmulatedModel, int | None] | Response:
    """A create request's body, model name, model and ``max_output_tokens``; or the 400 the API
    answers it with."""
    try:
        body = json.loads(raw)
    except ValueError:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    body_: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
    model_name = body_.get("model")
    prompt = body_.get("prompt")
    if model_name is None and prompt is not None:
        # A stored prompt carries its model: the emulator's first model stands in for it.
        model_name = next(iter(models), None)
    if not isinstance(model_name, str):
        return error_response(400, "Missing required parameter: 'model'.", param="model")
    if "input" not in body_ and prompt is None:
        return error_response(400, "Missing required parameter: 'input'.", param="input")
    model = models.get(model_name)
    if model is None:
        message = f"The model `{model_name}` does not exist or you do not have access to it."
        return error_response(400, message, param="model", code="model_not_found")
    max_output_tokens = body_.get("max_output_tokens")
    if max_output_tokens is not None and (
        not isinstance(max_output_tokens, int) or max_output_tokens < 1
    ):
        return error_response(400, "Invalid 'max_output_tokens'.", param="max_output_tokens")
    return body_, model_name, model, max_output_tokens


def follow_up(
    body: dict[str, Any], lookup: Callable[[str], Run | None]
) -> tuple[int, list[str]] | Response:
    """Check the function call outputs of a request, as the API does.

    Every function call of the previous response (and every `function_call` item in the
    input) needs a `function_call_output` with its `call_id`, and every output needs a
    call: 400 otherwise. Returns the number of `previous_response_id` hops from the start
    of the conversation, and the outputs, in input order.
    """
    previous_id = body.get("previous_response_id")
    previous: Run | None = None
    if previous_id is not None:
        previous = lookup(previous_id) if isinstance(previous_id, str) else None
        if previous is None:
            message = f"Previous response with id '{previous_id}' not found."
            return error_response(400, message, param="previous_response_id")
    items = input_items(body)
    pending = [] if previous is None else [c.call_id for c in previous.calls if c.done]
    pending += [item.get("call_id") for item in items if item.get("type") == "function_call"]
    outputs: list[str] = []
    answered: set[Any] = set()
    for item in items:
        if item.get("type") != "function_call_output":
            continue
        call_id = item.get("call_id")
        if call_id not in pending:
            message = f"No tool call found for function call output with call_id {call_id}."
            return error_response(400, message, param="input")
        answered.add(call_id)
        outputs.append(output_text(item.get("output")))
    for call_id in pending:
        if call_id not in answered:
            return error_response(
                400, f"No tool output found for function call {call_id}.", param="input"
            )
    return (0 if previous is None else previous.hops + 1), outputs
