"""Conformance: what the emulator sends validates against OpenAI's OpenAPI schemas.

`tests/spec/responses.json` holds the Responses schemas extracted from openai/openai-openapi
(see `tests/spec/README.md`). Every Response object the emulator answers (created,
queued, in progress, completed, incomplete, failed, cancelled, function calls), every
event type it emits (each against its own schema, chosen by `type`), its error bodies and
its input item lists are validated with a JSON Schema (2020-12) validator.

The spec and the live API disagree in a few places; the emulator follows the live API,
and `RESPONSE_QUIRKS` and `EVENT_QUIRKS` list each place with the reason. A test checks
that each quirk is still needed: the strict schema must reject what the emulator sends.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests._http import httpx2
from tether.testing import EmulatedModel, Faults, FunctionCall, ResponsesEmulator, Turn

SPEC = json.loads((Path(__file__).parent / "spec" / "responses.json").read_text("utf-8"))
DEFS: dict[str, Any] = SPEC["$defs"]

RESPONSE_QUIRKS = {
    "user": "the live API answers `user: null` when none was given; the spec types it as a "
    "string (a deprecated field, replaced by safety_identifier)",
    "usage": "`usage` is null until a response ends, and on a cancelled one (the spec's own "
    "cancel example answers `usage: null`); the spec's schema is not nullable",
}
"""Response fields whose value the live API sends as null where the spec wants an object or
a string: the lenient schema accepts null for each, and nothing else."""

EVENT_QUIRKS = {
    "keepalive": "an undocumented event the live API sends on long streams "
    '(`{"type": "keepalive", "sequence_number": N}`); the SDK passes it through',
}
"""Event types the live API sends that the spec does not describe."""

EMITTED = {
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "keepalive",
}
"""Every event type the emulator emits: the streams below must show each one."""


def _nullable(defs: dict[str, Any], name: str, field: str) -> None:
    """Let `field` of schema `name` (through its allOf parts) be null too."""
    schema = defs[name]
    for part in schema.get("allOf", [schema]):
        target = defs[part["$ref"].removeprefix("#/$defs/")] if "$ref" in part else part
        properties = target.get("properties", {})
        if field in properties:
            properties[field] = {"anyOf": [properties[field], {"type": "null"}]}
            return
    raise AssertionError(f"{name} has no field {field!r}: the quirk list is out of date")


def _lenient_defs() -> dict[str, Any]:
    defs = copy.deepcopy(DEFS)
    for field in RESPONSE_QUIRKS:
        _nullable(defs, "Response", field)
    return defs


LENIENT = _lenient_defs()


def validator(name: str, *, strict: bool = False) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the spec (with the quirks allowed unless `strict`)."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": DEFS if strict else LENIENT}
    )


EVENT_SCHEMAS = {
    DEFS[name]["properties"]["type"]["enum"][0]: name
    for name in (
        ref["$ref"].removeprefix("#/$defs/") for ref in DEFS["ResponseStreamEvent"]["anyOf"]
    )
}
"""Each event type of the spec's ResponseStreamEvent union, and the schema that describes it."""


def errors_of(name: str, instance: Any, *, strict: bool = False) -> list[str]:
    return [
        f"{error.json_path}: {error.message[:300]}"
        for error in validator(name, strict=strict).iter_errors(instance)
    ]


MODELS = {
    "fast": EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=6),
    "slow": EmulatedModel(ttft=0.0, tokens_per_s=100.0, length=100_000),
    "tools": EmulatedModel(
        ttft=0.0,
        tokens_per_s=5000.0,
        script=[Turn(text="Checking.", calls=[FunctionCall(name="lookup", arguments={"q": 1})])],
    ),
    "flat-error": EmulatedModel(
        ttft=0.0, tokens_per_s=5000.0, length=6, faults=Faults(error_event="flat", error_after=2)
    ),
    "keepalive": EmulatedModel(
        ttft=0.05, tokens_per_s=50.0, length=2, faults=Faults(keepalive_every=0.01)
    ),
    "best-effort": EmulatedModel(
        ttft=0.0, tokens_per_s=200.0, length=100_000, faults=Faults(cancel_best_effort=5)
    ),
    "flaky": EmulatedModel(ttft=0.0, length=2, faults=Faults(fail_before_stream=(429, 500, 503))),
}


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    with ResponsesEmulator(models=dict(MODELS), seed=13) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def streamed(emu: ResponsesEmulator) -> list[dict[str, Any]]:
    """Every event of a set of streams that, together, show every event type."""
    with emu.client(max_retries=0) as client:
        for model, extra in [
            ("fast", {}),
            ("fast", {"background": True}),
            ("fast", {"max_output_tokens": 3}),
            ("tools", {}),
            ("flat-error", {}),
            ("keepalive", {"background": True}),
        ]:
            list(client.responses.create(model=model, input="x", stream=True, **extra))
    return [event for record in emu.ledger for event in record.events]


def test_the_spec_copy_is_self_contained_and_a_valid_schema() -> None:
    """Every $ref of the extracted file points inside it, and the document is a valid schema."""
    targets = {ref.split('"', 1)[0] for ref in json.dumps(DEFS).split('"$ref": "')[1:]}
    assert targets
    assert all(t.startswith("#/$defs/") and t.removeprefix("#/$defs/") in DEFS for t in targets)
    jsonschema.Draft202012Validator.check_schema(SPEC)


def test_every_event_type_emitted_is_seen_and_has_a_schema_unless_a_quirk(
    streamed: list[dict[str, Any]],
) -> None:
    """The streams show every type the emulator emits; each is in the spec, or a listed quirk."""
    types = {event["type"] for event in streamed}
    assert types == EMITTED
    assert types - EVENT_SCHEMAS.keys() == EVENT_QUIRKS.keys()


def test_every_emitted_event_validates_against_its_own_schema(
    streamed: list[dict[str, Any]],
) -> None:
    """Each event, against the schema of its `type` (precise errors, unlike the whole union)."""
    failures = [
        f"{event['type']} #{event['sequence_number']}: {error}"
        for event in streamed
        if event["type"] not in EVENT_QUIRKS
        for error in errors_of(EVENT_SCHEMAS[event["type"]], event)
    ]
    assert failures == []


def test_every_emitted_event_validates_against_the_stream_event_union(
    streamed: list[dict[str, Any]],
) -> None:
    """And against ResponseStreamEvent itself, the schema the spec gives the SSE stream."""
    union = validator("ResponseStreamEvent")
    assert [
        e["type"] for e in streamed if e["type"] not in EVENT_QUIRKS and not union.is_valid(e)
    ] == []


def test_response_objects_validate_in_every_status(emu: ResponsesEmulator) -> None:
    """Blocking, background, in progress, cancelled, best-effort cancelled, failed, tools."""
    objects: dict[str, Any] = {}
    with httpx2.Client(base_url=emu.base_url, timeout=10) as http:

        def post(path: str, **body: Any) -> Any:
            return http.post(path, json=body).json()

        objects["completed"] = post("/responses", model="fast", input="x")
        objects["tools"] = post("/responses", model="tools", input="x")
        objects["incomplete"] = post("/responses", model="fast", input="x", max_output_tokens=2)
        objects["failed"] = post("/responses", model="flat-error", input="x")
        objects["queued"] = queued = post("/responses", model="slow", input="x", background=True)
        emu.wait_for_sync(lambda ledger: ledger[queued["id"]].tokens_generated >= 2)
        objects["in_progress"] = http.get(f"/responses/{queued['id']}").json()
        objects["cancelled"] = post(f"/responses/{queued['id']}/cancel")
        best = post("/responses", model="best-effort", input="x", background=True)
        objects["best_effort_cancel"] = post(f"/responses/{best['id']}/cancel")
        emu.wait_for_sync(lambda ledger: ledger[best["id"]].status == "completed")
        objects["best_effort_final"] = http.get(f"/responses/{best['id']}").json()
    assert {name: obj["status"] for name, obj in objects.items()} == {
        "completed": "completed",
        "tools": "completed",
        "incomplete": "incomplete",
        "failed": "failed",
        "queued": "queued",
        "in_progress": "in_progress",
        "cancelled": "cancelled",
        "best_effort_cancel": "cancelled",
        "best_effort_final": "completed",
    }
    assert {name: errors_of("Response", obj) for name, obj in objects.items()} == {
        name: [] for name in objects
    }


def test_each_response_quirk_is_still_needed(emu: ResponsesEmulator) -> None:
    """The strict schema rejects the emulator's objects exactly at the listed quirk fields."""
    with emu.client(max_retries=0) as client:
        queued = client.responses.with_raw_response.create(
            model="slow", input="x", background=True
        ).http_response.json()
        client.responses.cancel(queued["id"])
    strict = errors_of("Response", queued, strict=True)
    assert sorted(error.split(":", 1)[0] for error in strict) == sorted(
        f"$.{field}" for field in RESPONSE_QUIRKS
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/responses", {"input": "x"}, 400),
        ("POST", "/responses", {"model": "nope", "input": "x"}, 400),
        ("GET", "/responses/resp_nope", None, 404),
        ("POST", "/responses/resp_nope/cancel", None, 404),
        ("DELETE", "/responses/resp_nope", None, 404),
        ("GET", "/responses/resp_nope/input_items", None, 404),
        ("GET", "/models", None, 404),
        ("PUT", "/responses", None, 405),
    ],
)
def test_error_bodies_validate_as_error_response(
    emu: ResponsesEmulator, method: str, path: str, body: Any, status: int
) -> None:
    """Every error the emulator answers is the spec's ErrorResponse."""
    response = httpx2.request(method, emu.base_url + path, json=body, timeout=5)
    assert response.status_code == status
    assert errors_of("ErrorResponse", response.json()) == []


def test_fault_error_bodies_validate_as_error_response(emu: ResponsesEmulator) -> None:
    """429, 500 and 503 from fail_before_stream too."""
    statuses: list[int] = []
    for _ in range(3):
        response = httpx2.post(
            emu.base_url + "/responses", json={"model": "flaky", "input": "x"}, timeout=5
        )
        statuses.append(response.status_code)
        assert errors_of("ErrorResponse", response.json()) == []
    assert statuses == [429, 500, 503]


def test_input_item_lists_validate_as_response_item_list(emu: ResponsesEmulator) -> None:
    """A string input, a list of messages (user and assistant, string and part content)."""
    inputs: list[Any] = [
        "hello",
        [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "second"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "3"}]},
        ],
    ]
    with httpx2.Client(base_url=emu.base_url, timeout=10) as http:
        for value in inputs:
            created = http.post("/responses", json={"model": "fast", "input": value}).json()
            for query in ("", "?order=asc&limit=1"):
                page = http.get(f"/responses/{created['id']}/input_items{query}").json()
                assert page["data"]
                assert errors_of("ResponseItemList", page) == []
