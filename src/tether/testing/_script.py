"""Scripted models: the turns of a function-calling conversation, and how text is tokenised.

A [`Turn`][tether.testing.Turn] says what a scripted model answers on one turn: an assistant
message, [`FunctionCall`][tether.testing.FunctionCall]s, or both.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["FunctionCall", "Turn", "split_tokens"]

_TOKEN = re.compile(r"\s*\S+|\s+$")
_ARGUMENT_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+$")


def split_tokens(text: str) -> list[str]:
    """Split output text into tokens, each keeping its leading whitespace.

    Example:
        >>> split_tokens("Hello world")
        ['Hello', ' world']
    """
    return _TOKEN.findall(text)


def _json_arguments(value: str | Mapping[str, Any]) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(dict(value))


@final
@attrs.frozen(kw_only=True)
class FunctionCall:
    """One function call a scripted model makes (see [`Turn`][tether.testing.Turn]).

    The emulator streams it as the API does: `response.output_item.added` with a
    `function_call` item, `response.function_call_arguments.delta` events at the model's
    `tokens_per_s`, `response.function_call_arguments.done`, `response.output_item.done`.
    Its `call_id` (`call_...`) and item id (`fc_...`) are drawn from the emulator's seed.

    Example:
        >>> FunctionCall(name="get_weather", arguments={"city": "Paris"}).arguments
        '{"city": "Paris"}'
    """

    name: str
    """The name of the function the model calls."""

    arguments: str = attrs.field(default="{}", converter=_json_arguments)
    """The arguments as the JSON string the model sends. A mapping is encoded to JSON; a
    string is sent as it is, valid JSON or not (to test how a client handles bad arguments)."""

    def tokens(self) -> list[str]:
        """The argument deltas, one per simulated token; they join into `arguments`.

        Example:
            >>> FunctionCall(name="f", arguments={"x": 1}).tokens()
            ['{"', 'x', '":', ' 1', '}']
        """
        return _ARGUMENT_TOKEN.findall(self.arguments)


def _calls(value: Iterable[FunctionCall]) -> tuple[FunctionCall, ...]:
    calls = tuple(value)
    for call in calls:
        if not isinstance(call, FunctionCall):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"calls must be FunctionCall records, got {call!r}")
    return calls


@final
@attrs.frozen(kw_only=True)
class Turn:
    """What a scripted model answers on one turn of a function-calling conversation.

    A turn emits an assistant message (when `text` is set, or `echo_outputs` has
    something to echo), then its function calls, in order, and ends `completed` with all
    of them in `output`. A turn with neither calls nor text answers the model's usual
    text (`EmulatedModel.text`, or seeded lorem words).

    Examples:
        >>> turn = Turn(calls=[FunctionCall(name="get_weather", arguments={"city": "Paris"})])
        >>> [call.name for call in turn.calls]
        ['get_weather']
        >>> Turn(text="Done:", echo_outputs=True).message(["18C", "64F"]).splitlines()
        ['Done:', '18C', '64F']
    """

    calls: tuple[FunctionCall, ...] = attrs.field(default=(), converter=_calls)
    """The function calls of this turn, streamed one after the other."""

    text: str | None = None
    """The assistant message of this turn, or None."""

    echo_outputs: bool = False
    """Append to the message, one per line, the `function_call_output` outputs the request
    carried: a test can then read, in the final text, what reached the model."""

    def message(self, outputs: Iterable[str]) -> str | None:
        """The message text, given the tool outputs the request carried; None for none.

        Example:
            >>> Turn(text="hi").message([]), Turn().message(["x"])
            ('hi', None)
        """
        parts = [] if self.text is None else [self.text]
        if self.echo_outputs:
            parts.extend(outputs)
        return "\n".join(parts) if parts else None
