"""The emulator's fidelity, round two: what the live API does that the SDK lets through.

`store=false` responses cannot be found again; delta events carry `obfuscation` unless
asked not to; every answer has an `x-request-id`; a stored prompt can stand in for the
model and the input; DELETE and input_items exist; a half-sent request costs only its
own connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import anyio
import openai
import pytest

from tests._http import httpx2
from tether.testing import EmulatedModel, ResponsesEmulator

FAST = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=12)
ENDLESS = EmulatedModel(ttft=0.0, tokens_per_s=400.0, length=100_000)


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    with ResponsesEmulator(models={"fast": FAST, "endless": ENDLESS}, seed=11) as emulator:
        yield emulator


# --- store=false ------------------------------------------------------------------------


def not_found_error(response: httpx2.Response) -> dict[str, object]:
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    return body["error"]


def test_store_false_response_answers_404_to_retrieve_resume_cancel_and_the_rest(
    emu: ResponsesEmulator,
) -> None:
    """A response created with store=false is not retrievable: every lookup is a 404."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x", store=False)
        rid = response.id
        assert response.status == "completed"
        assert response.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid, stream=True, starting_after=0)
        with pytest.raises(openai.NotFoundError):
            client.responses.cancel(rid)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(rid)
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list(rid)
    error = not_found_error(httpx2.get(f"{emu.base_url}/responses/{rid}", timeout=5))
    assert rid in str(error["message"])
    assert emu.ledger[rid].store is False


async def test_store_false_background_response_cannot_be_cancelled_after_the_fact(
    emu: ResponsesEmulator,
) -> None:
    """Its id leads nowhere: the cancel is a 404 and the response runs on (an orphan)."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(
            model="endless", input="x", background=True, store=False
        )
        record = emu.ledger[created.id]
        with pytest.raises(openai.NotFoundError):
            await client.responses.cancel(created.id)
    assert record.generating
    assert record in emu.ledger.orphans()
    assert record.cancel_calls == 0


def test_store_false_response_cannot_be_continued_with_previous_response_id(
    emu: ResponsesEmulator,
) -> None:
    """previous_response_id of an unstored response is a 400, as for an unknown id."""
    with emu.client(max_retries=0) as client:
        first = client.responses.create(model="fast", input="x", store=False)
        with pytest.raises(openai.BadRequestError, match="not found"):
            client.responses.create(model="fast", input="y", previous_response_id=first.id)


# --- obfuscation ------------------------------------------------------------------------


def delta_events(emu: ResponsesEmulator, rid: str) -> list[dict[str, object]]:
    return [e for e in emu.ledger[rid].events if str(e["type"]).endswith(".delta")]


async def test_delta_events_carry_obfuscation_by_default(emu: ResponsesEmulator) -> None:
    """Every delta event has a string `obfuscation` field; other events do not."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(model="fast", input="x", stream=True)
        events = [event async for event in stream]
    rid = events[0].response.id  # type: ignore[union-attr]
    deltas = delta_events(emu, rid)
    assert len(deltas) == FAST.length
    assert all(isinstance(d["obfuscation"], str) and d["obfuscation"] for d in deltas)
    assert all("obfuscation" not in e for e in emu.ledger[rid].events if e not in deltas)
    seen = [e for e in events if e.type == "response.output_text.delta"]
    assert [getattr(e, "obfuscation", None) for e in seen] == [d["obfuscation"] for d in deltas]


async def test_include_obfuscation_false_removes_the_field(emu: ResponsesEmulator) -> None:
    """stream_options={"include_obfuscation": False} on create: no `obfuscation` anywhere."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="fast", input="x", stream=True, stream_options={"include_obfuscation": False}
        )
        events = [event async for event in stream]
    rid = events[0].response.id  # type: ignore[union-attr]
    assert delta_events(emu, rid)
    assert all("obfuscation" not in d for d in delta_events(emu, rid))
    assert all(getattr(e, "obfuscation", None) is None for e in events)


def test_resume_chooses_obfuscation_for_itself(emu: ResponsesEmulator) -> None:
    """GET ?stream=true&include_obfuscation=... adds or strips the field, whatever create chose."""
    with emu.client(max_retries=0) as client:
        plain = client.responses.create(
            model="fast", input="x", background=True, stream_options={"include_obfuscation": False}
        )
        padded = client.responses.create(model="fast", input="x", background=True)
        for rid in (plain.id, padded.id):
            emu.wait_for_sync(lambda ledger, rid=rid: ledger[rid].status == "completed")
        added = list(client.responses.retrieve(plain.id, stream=True, include_obfuscation=True))
        stripped = list(
            client.responses.retrieve(padded.id, stream=True, include_obfuscation=False)
        )
        as_stored = list(client.responses.retrieve(padded.id, stream=True))
    added_deltas = [e for e in added if e.type == "response.output_text.delta"]
    assert added_deltas
    assert all(getattr(e, "obfuscation", "") for e in added_deltas)
    assert all(getattr(e, "obfuscation", None) is None for e in stripped)
    assert [getattr(e, "obfuscation", None) for e in as_stored if e.type.endswith(".delta")] == [
        d["obfuscation"] for d in delta_events(emu, padded.id)
    ]


# --- x-request-id -----------------------------------------------------------------------


def test_every_answer_has_an_x_request_id_the_sdk_exposes(emu: ResponsesEmulator) -> None:
    """Create, retrieve, errors, 404s: each answer has its own req_... id."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x")
        retrieved = client.responses.retrieve(response.id)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="nope", input="x")
    unknown = httpx2.get(emu.base_url + "/models", timeout=5)
    ids = [
        response._request_id,
        retrieved._request_id,
        info.value.request_id,
        unknown.headers["x-request-id"],
    ]
    assert all(isinstance(i, str) and i.startswith("req_") for i in ids)
    assert len(set(ids)) == len(ids)
    assert emu.ledger[response.id].request_id == response._request_id


# --- create is no stricter than the API --------------------------------------------------


def test_create_accepts_a_prompt_without_input(emu: ResponsesEmulator) -> None:
    """model + prompt, no input: accepted (a stored prompt carries the input)."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", prompt={"id": "pmpt_123"})
    assert response.status == "completed"
    assert response.model == "fast"


def test_create_accepts_a_prompt_alone(emu: ResponsesEmulator) -> None:
    """prompt alone: accepted, on the emulator's first model (the prompt's own, live)."""
    response = httpx2.post(
        emu.base_url + "/responses", json={"prompt": {"id": "pmpt_123", "version": "2"}}, timeout=5
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["model"] == next(iter(emu.models))


# --- DELETE and input_items ---------------------------------------------------------------


def test_delete_answers_the_deleted_object_then_the_response_is_gone(
    emu: ResponsesEmulator,
) -> None:
    """DELETE /responses/{id}: `{"id", "object": "response", "deleted": true}`, then 404s."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x")
        deleted = httpx2.delete(f"{emu.base_url}/responses/{response.id}", timeout=5)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(response.id)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": response.id, "object": "response", "deleted": True}
    assert emu.ledger[response.id].deleted


def test_sdk_delete_returns_none(emu: ResponsesEmulator) -> None:
    """The SDK's responses.delete() accepts the answer."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x")
        assert client.responses.delete(response.id) is None  # type: ignore[func-returns-value]
    assert emu.ledger[response.id].deleted


def test_input_items_lists_the_input_newest_first_by_default(emu: ResponsesEmulator) -> None:
    """A string input is one user message; a list keeps its items, with ids, in order."""
    items = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "second"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "third"}]},
    ]
    with emu.client(max_retries=0) as client:
        one = client.responses.create(model="fast", input="hello there")
        three = client.responses.create(model="fast", input=items)  # type: ignore[arg-type]
        listed_one = client.responses.input_items.list(one.id)
        desc = client.responses.input_items.list(three.id)
        asc = client.responses.input_items.list(three.id, order="asc")
    assert [item.type for item in listed_one.data] == ["message"]
    assert listed_one.data[0].content[0].text == "hello there"  # type: ignore[union-attr]
    assert listed_one.data[0].role == "user"  # type: ignore[union-attr]
    texts = [item.content[0].text for item in asc.data]  # type: ignore[union-attr]
    assert texts == ["first", "second", "third"]
    assert [i.id for i in desc.data] == [i.id for i in reversed(asc.data)]
    assert len({i.id for i in asc.data}) == 3
    assert asc.first_id == asc.data[0].id
    assert asc.last_id == asc.data[-1].id
    assert not asc.has_more


def test_input_items_paginate_with_limit_and_after(emu: ResponsesEmulator) -> None:
    """limit and after page through the items; the SDK's auto-pagination walks them all."""
    items = [{"role": "user", "content": f"item {i}"} for i in range(7)]
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input=items)  # type: ignore[arg-type]
        first = client.responses.input_items.list(response.id, limit=3, order="asc")
        second = client.responses.input_items.list(
            response.id, limit=3, order="asc", after=first.data[-1].id
        )
        walked = list(client.responses.input_items.list(response.id, limit=2, order="asc"))
    assert first.has_more
    assert [i.content[0].text for i in first.data] == ["item 0", "item 1", "item 2"]  # type: ignore[union-attr]
    assert [i.content[0].text for i in second.data] == ["item 3", "item 4", "item 5"]  # type: ignore[union-attr]
    assert second.has_more
    assert [i.content[0].text for i in walked] == [f"item {i}" for i in range(7)]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("order=up", "order")],
)
def test_input_items_rejects_bad_parameters_with_400(
    emu: ResponsesEmulator, query: str, param: str
) -> None:
    """limit is 1 to 100, order asc or desc: anything else is a 400 naming the parameter."""
    with emu.client(max_retries=0) as client:
        response = client.responses.create(model="fast", input="x")
    answer = httpx2.get(f"{emu.base_url}/responses/{response.id}/input_items?{query}", timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


# --- half-sent requests ------------------------------------------------------------------

HALF_REQUESTS = [
    b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
    b'POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"model": "fa',
    b"GET /v1/resp",
    b"",
]


def send_half_and_close(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if payload:
            sock.sendall(payload)


@pytest.mark.parametrize("http2", [False, True], ids=["uvicorn", "hypercorn"])
async def test_half_sent_requests_cost_only_their_connection(
    http2: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Clients that close before a whole request (many, all at once) never harm the server."""
    async with ResponsesEmulator(models={"fast": FAST}, http2=http2) as emu:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                payload = HALF_REQUESTS[i % len(HALF_REQUESTS)]
                tg.start_soon(anyio.to_thread.run_sync, send_half_and_close, emu.port, payload)
        for payload in HALF_REQUESTS:  # and one after the other
            await anyio.to_thread.run_sync(send_half_and_close, emu.port, payload)
        async with emu.async_client(max_retries=0) as client:
            response = await client.responses.create(model="fast", input="x")
            stream = await client.responses.create(model="fast", input="x", stream=True)
            types = [event.type async for event in stream]
        assert response.status == "completed"
        assert types[-1] == "response.completed"
        assert emu.ledger.request_count == 2  # a half request is no request
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


def test_half_sent_json_body_then_close_answers_nothing_and_creates_nothing(
    emu: ResponsesEmulator,
) -> None:
    """A body cut short by the client is not parsed as a request: no response is created."""
    before = len(emu.ledger)
    body = json.dumps({"model": "fast", "input": "x"}).encode()
    head = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    send_half_and_close(emu.port, head + body[:10])
    with emu.client(max_retries=0) as client:
        assert client.responses.create(model="fast", input="x").status == "completed"
    assert len(emu.ledger) == before + 1
