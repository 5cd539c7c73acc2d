"""The Responses API wire format: response objects, stream events, errors, SSE frames.

Plain dicts and bytes, no pydantic: this is the emulator's hot path. The shapes follow
the installed `openai` SDK's own types (`openai.types.responses`), and the tests check
every emitted event against them.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "add_obfuscation",
    "deleted_object",
    "delta_frame",
    "error_body",
    "event_frame",
    "function_call_item",
    "input_item_list",
    "message_item",
    "obfuscation",
    "output_text_part",
    "response_object",
    "strip_obfuscation",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# Echoed from the request when present, with these defaults otherwise.
_ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}

_ERROR_CODES = {
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "server_error",
}

_ERROR_MESSAGES = {
    429: "Rate limit reached for requests (emulated). Please try again in 1ms.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The server is overloaded or not ready yet.",
}


def request_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a Response object repeats, with the API's defaults.

    Example:
        >>> request_echo({"instructions": "Be brief"})["instructions"]
        'Be brief'
    """
    echo = {key: body.get(key, default) for key, default in _ECHOED.items()}
    if echo["metadata"] is None:
        echo["metadata"] = {}
    if not isinstance(echo["tools"], list):
        echo["tools"] = []
    return echo


def output_text_part(text: str) -> dict[str, Any]:
    """An `output_text` content part.

    Example:
        >>> output_text_part("hi")["type"]
        'output_text'
    """
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    """An assistant message output item; `text=None` gives it no content part yet.

    Example:
        >>> message_item("msg_1", "in_progress", None)["content"]
        []
    """
    content = [] if text is None else [output_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    """A `function_call` output item (`ResponseFunctionToolCall`).

    Example:
        >>> function_call_item("fc_1", "call_1", "f", "{}", "completed")["type"]
        'function_call'
    """
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    background: bool,
    echo: dict[str, Any],
    output: list[dict[str, Any]],
    usage: tuple[int, int] | None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A full Response object, as `GET /v1/responses/{id}` answers it.

    Args:
        response_id: The `resp_...` id.
        created_at: Unix seconds.
        model: The model name.
        status: One of the API's response statuses.
        background: Whether it was created with `background=true`.
        echo: The request fields it repeats (from `request_echo`).
        output: The output items so far.
        usage: `(input_tokens, output_tokens)`, or None while it runs.
        error: The `ResponseError` of a failed response.
        incomplete_reason: Why an incomplete response stopped.
        completed_at: Unix seconds, once completed.

    Returns:
        A JSON-ready dict.

    Example:
        >>> response_object(
        ...     response_id="resp_1", created_at=0, model="m", status="queued",
        ...     background=True, echo=request_echo({}), output=[], usage=None,
        ... )["object"]
        'response'
    """
    obj: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": background,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "model": model,
        "output": output,
        "reasoning": {"effort": None, "summary": None},
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "usage": None,
    }
    obj.update(echo)
    if usage is not None:
        input_tokens, output_tokens = usage
        obj["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
    return obj


def event_frame(event_type: str, sequence_number: int, fields: dict[str, Any]) -> bytes:
    """One SSE frame: `event: <type>` and `data: <json>` with the sequence number.

    Example:
        >>> event_frame("keepalive", 3, {})
        b'event: keepalive\\ndata: {"type":"keepalive","sequence_number":3}\\n\\n'
    """
    payload = {"type": event_type, "sequence_number": sequence_number, **fields}
    return f"event: {event_type}\ndata: {_dumps(payload)}\n\n".encode()


_DELTA = (
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","sequence_number":%d,"item_id":"%s",'
    '"output_index":0,"content_index":0,"delta":%s,"logprobs":[]}\n\n'
)
_DELTA_OBFUSCATED = (
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","sequence_number":%d,"item_id":"%s",'
    '"output_index":0,"content_index":0,"delta":%s,"logprobs":[],"obfuscation":"%s"}\n\n'
)
# Letters and digits only: an obfuscation string never needs JSON escaping.
_PAD = "Kq7vX2mR9tLw4zPb8nYc3hJd6sGf1kVx5rTe0uWa" * 2
_PAD_TO = 16  # the live API pads deltas to a similar size; the exact rule is not public
_OBFUSCATION = re.compile(rb',"obfuscation":"[0-9A-Za-z]*"')
_DELTA_EVENTS = (
    b"event: response.output_text.delta\n",
    b"event: response.function_call_arguments.delta\n",
)


def obfuscation(sequence_number: int, delta: str) -> str:
    """The `obfuscation` padding of a delta event: seeded by its sequence number only.

    The live API adds random characters to `obfuscation` so that every delta event has
    about the same size (a mitigation of side-channel attacks on the payload length).
    Here the characters are drawn deterministically and pad the delta to 16 characters.

    Example:
        >>> len("hi" + obfuscation(3, "hi"))
        16
    """
    start = sequence_number % 40
    return _PAD[start : start + max(1, _PAD_TO - len(delta))]


def delta_frame(sequence_number: int, item_id: str, token: str, obfuscate: bool = True) -> bytes:
    """A `response.output_text.delta` frame, pre-formatted (the hot path).

    Args:
        sequence_number: The event's number in the stream.
        item_id: The message item's id.
        token: The text delta.
        obfuscate: Add the `obfuscation` field (the API's default).

    Example:
        >>> b'"delta":" hi"' in delta_frame(7, "msg_1", " hi")
        True
    """
    if obfuscate:
        pad = obfuscation(sequence_number, token)
        return (_DELTA_OBFUSCATED % (sequence_number, item_id, _dumps(token), pad)).encode()
    return (_DELTA % (sequence_number, item_id, _dumps(token))).encode()


def strip_obfuscation(chunk: bytes) -> bytes:
    """Remove the `obfuscation` field from every event in `chunk` (SSE frames).

    Example:
        >>> strip_obfuscation(delta_frame(1, "msg_1", "hi")) == delta_frame(1, "msg_1", "hi", False)
        True
    """
    return _OBFUSCATION.sub(b"", chunk)


def add_obfuscation(frame: bytes) -> bytes:
    """Add the `obfuscation` field to one frame if it is a delta event without one.

    Example:
        >>> add_obfuscation(delta_frame(1, "msg_1", "hi", False)) == delta_frame(1, "msg_1", "hi")
        True
    """
    if not frame.startswith(_DELTA_EVENTS) or b'"obfuscation":' in frame:
        return frame
    data = json.loads(frame[frame.index(b"\ndata: ") + 7 :])
    data["obfuscation"] = obfuscation(data["sequence_number"], data["delta"])
    return event_frame(data.pop("type"), data.pop("sequence_number"), data)


def deleted_object(response_id: str) -> dict[str, Any]:
    """What `DELETE /v1/responses/{id}` answers.

    Example:
        >>> deleted_object("resp_1")["deleted"]
        True
    """
    return {"id": response_id, "object": "response", "deleted": True}


def input_item_list(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page of `GET /v1/responses/{id}/input_items` (a `ResponseItemList`).

    Example:
        >>> input_item_list([], False)["object"]
        'list'
    """
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def error_body(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> bytes:
    """An API error body: `{"error": {"message", "type", "param", "code"}}`.

    Args:
        status: The HTTP status, which picks the default type, code and message.
        message: The message; a stock one for the status when None.
        param: The request parameter at fault.
        code: The error code; a stock one for the status when None.
        error_type: The error type; a stock one for the status when None.

    Example:
        >>> json.loads(error_body(429))["error"]["code"]
        'rate_limit_exceeded'
    """
    error = {
        "message": message or _ERROR_MESSAGES.get(status, f"Emulated HTTP {status} error."),
        "type": error_type or _ERROR_TYPES.get(status, "server_error"),
        "param": param,
        "code": code if code is not None else _ERROR_CODES.get(status),
    }
    return _dumps({"error": error}).encode()
