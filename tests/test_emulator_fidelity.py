"""The emulator speaks the Responses API closely enough that the openai SDK cannot tell.

Ground truth is the installed SDK: its `ResponseStreamEvent` and `Response` types,
its stream accumulator, and its status-code-to-exception mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests._http import httpx2
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

EVENTS = pydantic.TypeAdapter[Any](ResponseStreamEvent)
FAST = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=12)


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    models = {
        "fast": FAST,
        "flat-error": EmulatedModel(
            ttft=0.0,
            tokens_per_s=5000.0,
            length=12,
            faults=Faults(error_event="flat", error_after=3),
        ),
        "nested-error": EmulatedModel(
            ttft=0.0,
            tokens_per_s=5000.0,
            length=12,
            faults=Faults(error_event="nested", error_after=3),
        ),
        "keepalive": EmulatedModel(
            ttft=0.05, tokens_per_s=50.0, length=4, faults=Faults(keepalive_every=0.01)
        ),
        "flaky": EmulatedModel(
            ttft=0.0,
            tokens_per_s=5000.0,
            length=5,
            faults=Faults(fail_before_stream=(500, 429, 503)),
        ),
    }
    with ResponsesEmulator(models=models, seed=7) as emulator:
        yield emulator


def _without_parsed(value: Any) -> Any:
    """Drop the `parsed` keys that the SDK's stream helper adds client-side."""
    if isinstance(value, dict):
        return {k: _without_parsed(v) for k, v in value.items() if k != "parsed"}
    if isinstance(value, list):
        return [_without_parsed(v) for v in value]
    return value


@pytest.mark.parametrize("background", [False, True])
async def test_every_stored_event_validates_against_the_sdk_union(
    emu: ResponsesEmulator, background: bool
) -> None:
    """Each event the server sent parses as the SDK's own ResponseStreamEvent, in order."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="fast", input="Say hi", stream=True, background=background
        )
        seen = [event async for event in stream]
    record = emu.ledger[seen[0].response.id]  # type: ignore[union-attr]
    events = record.events
    assert [e.sequence_number for e in seen] == list(range(len(events)))
    for raw, parsed in zip(events, seen, strict=True):
        validated = EVENTS.validate_python(raw)
        assert validated.type == raw["type"] == parsed.type
    head = ["response.created", "response.queued", "response.in_progress"]
    if not background:
        head.remove("response.queued")
    assert [e["type"] for e in events[: len(head)]] == head
    assert events[0]["response"]["status"] == ("queued" if background else "in_progress")
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == FAST.length
    assert all(d["logprobs"] == [] for d in deltas)
    assert [e["type"] for e in events[-4:]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens"] == FAST.length
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_stream_accumulator_final_response_equals_retrieve(emu: ResponsesEmulator) -> None:
    """The SDK helper's accumulated Response is exactly what GET /v1/responses/{id} answers."""
    async with emu.async_client(max_retries=0) as client:
        async with client.responses.stream(model="fast", input="Say hi", background=True) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_response()
        retrieved = await client.responses.retrieve(final.id)
    assert retrieved.status == "completed"
    assert _without_parsed(final.model_dump()) == retrieved.model_dump()
    assert final.output_text == retrieved.output_text != ""


def test_non_stream_response_validates_and_equals_retrieve(emu: ResponsesEmulator) -> None:
    """A blocking create answers the same Response object that retrieve answers later."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="Say hi", instructions="Be brief")
        raw = client.responses.with_raw_response.retrieve(response.id).http_response.json()
    assert Response.model_validate(raw).model_dump() == response.model_dump()
    assert response.status == "completed"
    assert response.instructions == "Be brief"
    assert response.usage is not None
    assert response.usage.output_tokens == FAST.length


async def test_max_output_tokens_ends_the_response_incomplete(emu: ResponsesEmulator) -> None:
    """A cap below the model's length ends with response.incomplete, reason max_output_tokens."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="fast", input="Say hi", stream=True, max_output_tokens=5
        )
        events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert emu.ledger[last.response.id].tokens_generated == 5
    for raw in emu.ledger[last.response.id].events:
        EVENTS.validate_python(raw)


async def test_flat_error_event_is_yielded_and_the_response_fails(emu: ResponsesEmulator) -> None:
    """A flat error event validates as ResponseErrorEvent; the response ends failed."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(model="flat-error", input="x", stream=True)
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[-2:] == ["error", "response.failed"]
    assert types.count("response.output_text.delta") == 3
    record = emu.ledger[events[0].response.id]  # type: ignore[union-attr]
    assert record.status == "failed"
    for raw in record.events:
        EVENTS.validate_python(raw)
    retrieved = Response.model_validate(record.events[-1]["response"])
    assert retrieved.error is not None
    assert retrieved.error.code == "server_error"


def test_nested_error_event_makes_the_sdk_raise_api_error(emu: ResponsesEmulator) -> None:
    """A `{"error": {...}}` payload makes the SDK raise APIError mid-stream.

    Sync client: an async SDK stream that raises leaves its inner async generators
    unclosed, which trio reports as a ResourceWarning.
    """
    seen: list[str] = []
    with emu.client(max_retries=0) as client:
        stream = client.responses.create(model="nested-error", input="x", stream=True)
        with pytest.raises(openai.APIError, match="emulated"):
            for event in stream:
                seen.append(event.type)
    assert seen.count("response.output_text.delta") == 3
    assert "error" not in seen
    record = emu.ledger.responses[-1]
    assert record.events[-2]["error"]["code"] == "server_error"
    assert record.status == "failed"


async def test_keepalive_events_reach_the_sdk_with_sequence_numbers(
    emu: ResponsesEmulator,
) -> None:
    """Keepalive events are numbered like the others and the SDK passes them through."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="keepalive", input="x", stream=True, background=True
        )
        events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "keepalive" in [e.type for e in events]
    for event in events:
        if event.type != "keepalive":
            EVENTS.validate_python(event.model_dump())
    assert events[-1].type == "response.completed"


def test_unknown_model_raises_bad_request_naming_the_model(emu: ResponsesEmulator) -> None:
    """400 with param "model" and code model_not_found, counted as a request."""
    before = emu.ledger.requests
    with emu.client(max_retries=0) as client, pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="no-such-model", input="x")
    assert info.value.param == "model"
    assert info.value.code == "model_not_found"
    assert emu.ledger.requests == before + 1


def test_unknown_response_id_raises_not_found(emu: ResponsesEmulator) -> None:
    """Retrieve and cancel of an unknown id answer 404 in the API's error shape."""
    with emu.client(max_retries=0) as client:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_nope")
        with pytest.raises(openai.NotFoundError):
            client.responses.cancel("resp_nope")


def test_fail_before_stream_maps_to_sdk_exceptions_in_order(emu: ResponsesEmulator) -> None:
    """(500, 429, 503) answer InternalServerError, RateLimitError, InternalServerError; then it works."""
    responses_before = len(emu.ledger)
    with emu.client(max_retries=0) as client:
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="flaky", input="x")
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model="flaky", input="x", stream=True)
        assert info.value.code == "rate_limit_exceeded"
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="flaky", input="x")
        assert len(emu.ledger) == responses_before
        assert client.responses.create(model="flaky", input="x").status == "completed"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "parse"),
        (b"[1, 2]", "object"),
        (b'{"input": "x"}', "model"),
        (b'{"model": "fast"}', "input"),
        (b'{"model": "fast", "input": "x", "max_output_tokens": -1}', "max_output_tokens"),
    ],
)
def test_malformed_requests_answer_400_invalid_request_error(
    emu: ResponsesEmulator, content: bytes, message: str
) -> None:
    """Bad input is a 400 in the API's error shape: never a 500, never a hang."""
    response = httpx2.post(
        emu.base_url + "/responses",
        content=content,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_unknown_route_answers_404_json(emu: ResponsesEmulator) -> None:
    """Paths the emulator does not serve answer 404 in the API's error shape."""
    response = httpx2.get(emu.base_url + "/models", timeout=5)
    assert response.status_code == 404
    assert "error" in response.json()
