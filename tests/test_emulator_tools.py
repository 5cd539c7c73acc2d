"""Scripted function calls: the emulator streams them, and checks their outputs, as the API does.

Ground truth is the installed SDK: `ResponseStreamEvent`, `Response`, and the stream
accumulator of `client.responses.stream(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import FunctionToolParam, ResponseStreamEvent

from tether.testing import EmulatedModel, ResponsesEmulator
from tether.testing._models import (  # re-exported by tether.testing once integrated
    FunctionCall,
    Turn,
)

EVENTS = pydantic.TypeAdapter[Any](ResponseStreamEvent)
WEATHER = FunctionCall(name="get_weather", arguments={"city": "Paris", "units": "celsius"})
TIME = FunctionCall(name="get_time", arguments={"tz": "Europe/Paris"})
TOOLS: list[FunctionToolParam] = [
    {
        "type": "function",
        "name": name,
        "description": f"{name} (test tool)",
        "parameters": {
            "type": "object",
            "properties": {key: {"type": "string"} for key in keys},
            "required": list(keys),
            "additionalProperties": False,
        },
        "strict": True,
    }
    for name, keys in [("get_weather", ("city", "units")), ("get_time", ("tz",))]
]


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    fast = {"ttft": 0.0, "tokens_per_s": 5000.0}
    models = {
        "agent": EmulatedModel(
            **fast,
            script=[
                Turn(text="Let me check.", calls=[WEATHER, TIME]),
                Turn(calls=[FunctionCall(name="get_weather", arguments={"city": "Lyon"})]),
                Turn(text="Here is what I found:", echo_outputs=True),
            ],
        ),
        "caller": EmulatedModel(**fast, script=[Turn(calls=[WEATHER])]),
        "slow-caller": EmulatedModel(
            ttft=0.0,
            tokens_per_s=20.0,
            script=[Turn(calls=[FunctionCall(name="f", arguments={"text": "word " * 200})])],
        ),
    }
    with ResponsesEmulator(models=models, seed=3) as emulator:
        yield emulator


def _without_parsed(value: Any) -> Any:
    """Drop what the SDK's stream helper adds client-side (`parsed`, `parsed_arguments`)."""
    if isinstance(value, dict):
        return {
            k: _without_parsed(v)
            for k, v in value.items()
            if k not in ("parsed", "parsed_arguments")
        }
    if isinstance(value, list):
        return [_without_parsed(v) for v in value]
    return value


def _outputs(response: Any, *texts: str) -> list[dict[str, Any]]:
    calls = [item for item in response.output if item.type == "function_call"]
    return [
        {"type": "function_call_output", "call_id": call.call_id, "output": text}
        for call, text in zip(calls, texts, strict=True)
    ]


async def test_function_call_events_validate_against_the_sdk_union(emu: ResponsesEmulator) -> None:
    """A message, then two calls: every event parses as the SDK's own, in the API's order."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="agent", input="Weather?", tools=TOOLS, stream=True, background=True
        )
        seen = [event async for event in stream]
    record = emu.ledger[seen[0].response.id]  # type: ignore[union-attr]
    events = record.events
    assert [e.sequence_number for e in seen] == list(range(len(events)))
    for raw in events:
        assert EVENTS.validate_python(raw).type == raw["type"]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    for index, call in [(1, WEATHER), (2, TIME)]:
        deltas = [
            e["delta"]
            for e in events
            if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index
        ]
        assert "".join(deltas) == call.arguments
        assert len(deltas) == len(call.tokens())
        done = [
            e
            for e in events
            if e["type"] == "response.function_call_arguments.done" and e["output_index"] == index
        ]
        assert [d["arguments"] for d in done] == [call.arguments]
    final = seen[-1]
    assert final.type == "response.completed"
    calls = [item for item in final.response.output if item.type == "function_call"]
    assert [(c.name, c.arguments, c.status) for c in calls] == [
        ("get_weather", WEATHER.arguments, "completed"),
        ("get_time", TIME.arguments, "completed"),
    ]
    assert all(c.call_id.startswith("call_") for c in calls)


async def test_stream_accumulator_equals_retrieve_with_function_calls(
    emu: ResponsesEmulator,
) -> None:
    """The SDK helper's accumulated Response (calls included) is what GET answers."""
    async with emu.async_client(max_retries=0) as client:
        async with client.responses.stream(
            model="agent", input="Weather?", tools=TOOLS, background=True
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
        retrieved = await client.responses.retrieve(final.id)
    assert _without_parsed(final.model_dump()) == retrieved.model_dump()
    assert [t.name for t in retrieved.tools] == ["get_weather", "get_time"]  # type: ignore[union-attr]


def test_argument_tokens_are_counted_as_output_tokens(emu: ResponsesEmulator) -> None:
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="caller", input="Weather?", tools=TOOLS)
    assert response.usage is not None
    assert response.usage.output_tokens == len(WEATHER.tokens())
    assert emu.ledger[response.id].tokens_generated == len(WEATHER.tokens())
    assert response.output_text == ""


def test_the_script_follows_the_previous_response_chain(emu: ResponsesEmulator) -> None:
    """Turn k answers the request k hops down the chain; the final one echoes the outputs."""
    with emu.client(max_retries=0) as client:
        first = client.responses.create(model="agent", input="Weather?", tools=TOOLS)
        second = client.responses.create(
            model="agent",
            previous_response_id=first.id,
            input=_outputs(first, "18C", "14:00"),  # type: ignore[arg-type]
            tools=TOOLS,
        )
        assert [item.type for item in second.output] == ["function_call"]
        third = client.responses.create(
            model="agent",
            previous_response_id=second.id,
            input=_outputs(second, '{"temp": 21}'),  # type: ignore[arg-type]
        )
        fresh = client.responses.create(model="agent", input="Again?", tools=TOOLS)
    assert third.output_text.splitlines() == ["Here is what I found:", '{"temp": 21}']
    assert first.output_text == "Let me check."
    assert [i.type for i in fresh.output] == [i.type for i in first.output]


def test_the_last_scripted_turn_repeats(emu: ResponsesEmulator) -> None:
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="caller", input="x")
        for _ in range(3):
            response = client.responses.create(
                model="caller",
                previous_response_id=response.id,
                input=_outputs(response, "ok"),  # type: ignore[arg-type]
            )
    assert [item.type for item in response.output] == ["function_call"]


def test_a_missing_tool_output_answers_400_naming_the_call(emu: ResponsesEmulator) -> None:
    """Every call of the previous response needs an output, as on the live API."""
    before = len(emu.ledger)
    with emu.client(max_retries=0) as client:
        first = client.responses.create(model="agent", input="Weather?")
        calls = [item for item in first.output if item.type == "function_call"]
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(
                model="agent",
                previous_response_id=first.id,
                input=_outputs(first, "18C", "14:00")[:1],  # type: ignore[arg-type]
            )
    assert info.value.param == "input"
    assert f"No tool output found for function call {calls[1].call_id}." in str(info.value)
    assert len(emu.ledger) == before + 1  # only the first response was created


def test_an_output_for_an_unknown_call_answers_400(emu: ResponsesEmulator) -> None:
    with emu.client(max_retries=0) as client:
        first = client.responses.create(model="caller", input="Weather?")
        outputs = [
            *_outputs(first, "18C"),
            {"type": "function_call_output", "call_id": "call_nope", "output": "x"},
        ]
        with pytest.raises(openai.BadRequestError, match="call_nope"):
            client.responses.create(
                model="caller",
                previous_response_id=first.id,
                input=outputs,  # type: ignore[arg-type]
            )


def test_an_unknown_previous_response_answers_400(emu: ResponsesEmulator) -> None:
    with emu.client(max_retries=0) as client, pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="caller", previous_response_id="resp_nope", input="x")
    assert info.value.param == "previous_response_id"


def test_function_call_items_in_the_input_need_outputs_too(emu: ResponsesEmulator) -> None:
    """Stateless follow-ups (the calls re-sent in the input) are checked the same way."""
    call = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "{}",
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": "18C"}
    with emu.client(max_retries=0) as client:
        with pytest.raises(openai.BadRequestError, match="call_1"):
            client.responses.create(model="caller", input=[call])  # type: ignore[list-item]
        answered = client.responses.create(model="caller", input=[call, output])  # type: ignore[list-item]
    assert answered.status == "completed"


async def test_a_cancel_mid_arguments_leaves_the_call_incomplete(emu: ResponsesEmulator) -> None:
    """Argument deltas are paced by tokens_per_s: a cancel can land inside a call."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="slow-caller", input="x", background=True)
        await emu.wait_for(lambda ledger: ledger[created.id].tokens_generated >= 3)
        cancelled = await client.responses.cancel(created.id)
    record = emu.ledger[created.id]
    assert cancelled.status == "cancelled"
    assert record.tokens_after_cancel == 0
    [call] = cancelled.output
    assert call.type == "function_call"
    assert call.status == "incomplete"
    assert 0 < len(call.arguments) < len(emu.models["slow-caller"].script[0].calls[0].arguments)


def test_max_output_tokens_cuts_a_call_incomplete(emu: ResponsesEmulator) -> None:
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="caller", input="x", max_output_tokens=3)
    assert response.status == "incomplete"
    [call] = response.output
    assert call.type == "function_call"
    assert call.status == "incomplete"
    assert call.arguments == "".join(WEATHER.tokens()[:3])
