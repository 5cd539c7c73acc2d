"""Cancel as the live API does it: `usage: null`, best effort, and what a cancel saved.

The live API's cancel is best effort: after a 200 `cancelled` answer, events may still
arrive on the stream and the response may end `completed` (openai-python #2643; a
cancelled response later read `completed` on Azure). `Faults(cancel_best_effort=N)`
models it; the ledger records what really happened.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tether.testing import EmulatedModel, Faults, ResponsesEmulator

SLOW = EmulatedModel(ttft=0.0, tokens_per_s=200.0, length=100_000)
BEST_EFFORT = EmulatedModel(
    ttft=0.0, tokens_per_s=200.0, length=100_000, faults=Faults(cancel_best_effort=15)
)
BEST_EFFORT_CANCELLED = EmulatedModel(
    ttft=0.0,
    tokens_per_s=200.0,
    length=100_000,
    faults=Faults(cancel_best_effort=15, cancel_best_effort_status="cancelled"),
)
# 1 s of output: the cancel lands well before the end, with fewer tokens left than the extra.
SHORT_BEST_EFFORT = EmulatedModel(
    ttft=0.0, tokens_per_s=200.0, length=200, faults=Faults(cancel_best_effort=100_000)
)


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    models = {
        "slow": SLOW,
        "best-effort": BEST_EFFORT,
        "best-effort-cancelled": BEST_EFFORT_CANCELLED,
        "short-best-effort": SHORT_BEST_EFFORT,
        "best-effort-slowly": EmulatedModel(
            ttft=0.0, tokens_per_s=20.0, length=100_000, faults=Faults(cancel_best_effort=15)
        ),
        "fast": EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=20),
    }
    with ResponsesEmulator(models=models, seed=5) as emulator:
        yield emulator


async def read_cancelling_after(
    client: openai.AsyncOpenAI, model: str, deltas: int
) -> tuple[str, list[str], openai.types.responses.Response]:
    """Stream a background response, cancel it after `deltas` deltas, read to the end."""
    types: list[str] = []
    rid = ""
    answer = None
    stream = await client.responses.create(model=model, input="x", stream=True, background=True)
    async for event in stream:
        types.append(event.type)
        if event.type == "response.created":
            rid = event.response.id
        if answer is None and types.count("response.output_text.delta") == deltas:
            answer = await client.responses.cancel(rid)
    assert answer is not None
    return rid, types, answer


async def test_a_cancelled_response_has_null_usage(emu: ResponsesEmulator) -> None:
    """The cancel answer, retrieve and the ledger agree: cancelled, `usage: null`."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="slow", input="x", background=True)
        record = emu.ledger[created.id]
        await emu.wait_for(lambda _: record.tokens_generated >= 5)
        cancelled = await client.responses.cancel(created.id)
        retrieved = await client.responses.retrieve(created.id)
    assert cancelled.status == retrieved.status == "cancelled"
    assert cancelled.usage is None
    assert retrieved.usage is None


async def test_usage_on_cancel_opts_back_into_usage() -> None:
    """ResponsesEmulator(usage_on_cancel=True): a cancelled response counts its tokens."""
    async with ResponsesEmulator(models={"slow": SLOW}, usage_on_cancel=True) as emu:
        async with emu.async_client(max_retries=0) as client:
            created = await client.responses.create(model="slow", input="x", background=True)
            record = emu.ledger[created.id]
            await emu.wait_for(lambda _: record.tokens_generated >= 5)
            cancelled = await client.responses.cancel(created.id)
    assert cancelled.usage is not None
    assert cancelled.usage.output_tokens == record.tokens_generated


async def test_best_effort_cancel_answers_cancelled_then_the_stream_goes_on_to_completed(
    emu: ResponsesEmulator,
) -> None:
    """A 200 `cancelled`, then 15 more deltas on the stream, then response.completed."""
    async with emu.async_client(max_retries=0) as client:
        rid, types, answer = await read_cancelling_after(client, "best-effort", 3)
        final = await client.responses.retrieve(rid)
    record = emu.ledger[rid]
    assert answer.status == "cancelled"
    assert answer.usage is None
    assert types[-1] == "response.completed"
    assert final.status == record.status == "completed"
    assert record.cancel_reported_status == "cancelled"
    assert record.cancel_statuses == [200]
    assert record.stopped_by is None
    assert record.tokens_after_cancel == 15
    assert types.count("response.output_text.delta") == record.tokens_generated
    assert final.usage is not None
    assert final.usage.output_tokens == record.tokens_generated
    assert len(final.output_text.split()) == record.tokens_generated  # the text ends there


async def test_best_effort_cancel_variant_ends_cancelled_after_the_extra_tokens(
    emu: ResponsesEmulator,
) -> None:
    """cancel_best_effort_status="cancelled": 15 more deltas, then the stream just ends."""
    async with emu.async_client(max_retries=0) as client:
        rid, types, answer = await read_cancelling_after(client, "best-effort-cancelled", 3)
        final = await client.responses.retrieve(rid)
    record = emu.ledger[rid]
    assert answer.status == final.status == record.status == "cancelled"
    assert final.usage is None
    assert types[-1] == "response.output_text.delta"
    assert record.tokens_after_cancel == 15
    assert record.stopped_by == "cancel"
    assert record.cancel_reported_status == "cancelled"


async def test_best_effort_cancel_keeps_the_response_generating_until_it_ends(
    emu: ResponsesEmulator,
) -> None:
    """Between the 200 and the end: retrieve says in_progress, and with nobody listening it is
    an orphan; a second cancel answers cancelled again; once completed, cancel answers 400."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(
            model="best-effort-slowly", input="x", background=True
        )
        record = emu.ledger[created.id]
        await emu.wait_for(lambda _: record.tokens_generated >= 2)
        assert (await client.responses.cancel(created.id)).status == "cancelled"
        # 15 extra tokens at 20 tokens/s: 750 ms during which it still generates.
        assert (await client.responses.retrieve(created.id)).status == "in_progress"
        assert record in emu.ledger.orphans()
        assert (await client.responses.cancel(created.id)).status == "cancelled"
        await emu.wait_for(lambda _: record.status == "completed")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel a completed response"):
            await client.responses.cancel(created.id)
    assert record.cancel_statuses == [200, 200, 400]
    assert record.tokens_after_cancel == 15
    assert record not in emu.ledger.orphans()


async def test_best_effort_cancel_of_a_response_near_its_end_just_completes(
    emu: ResponsesEmulator,
) -> None:
    """More extra tokens than are left: the response completes with its whole text."""
    async with emu.async_client(max_retries=0) as client:
        rid, types, _ = await read_cancelling_after(client, "short-best-effort", 2)
    record = emu.ledger[rid]
    assert record.status == "completed"
    assert record.tokens_generated == SHORT_BEST_EFFORT.length
    assert record.tokens_saved == 0
    assert types[-1] == "response.completed"


async def test_tokens_saved_is_what_was_planned_minus_what_was_generated(
    emu: ResponsesEmulator,
) -> None:
    """A cancel that lands saves the rest of the text; the ledger sums savings over responses."""
    async with emu.async_client(max_retries=0) as client:
        created = await client.responses.create(model="slow", input="x", background=True)
        record = emu.ledger[created.id]
        await emu.wait_for(lambda _: record.tokens_generated >= 5)
        assert record.tokens_saved == 0  # still running: nothing saved yet
        await client.responses.cancel(created.id)
        done = await client.responses.create(model="fast", input="x")
    assert record.tokens_planned == SLOW.length
    assert record.tokens_saved == SLOW.length - record.tokens_generated
    assert emu.ledger.tokens_saved(created.id) == record.tokens_saved
    assert emu.ledger[done.id].tokens_saved == 0
    assert emu.ledger.tokens_saved() == sum(r.tokens_saved for r in emu.ledger)
    assert emu.ledger.tokens_after_cancel(created.id) == record.tokens_after_cancel
    assert emu.ledger.tokens_after_cancel() == sum(r.tokens_after_cancel for r in emu.ledger)


async def test_tokens_saved_by_a_best_effort_cancel_is_only_what_it_cut(
    emu: ResponsesEmulator,
) -> None:
    """The response outran the cancel by 15 tokens: saved = planned - generated, all the same."""
    async with emu.async_client(max_retries=0) as client:
        rid, _, _ = await read_cancelling_after(client, "best-effort", 3)
    record = emu.ledger[rid]
    assert record.status == "completed"
    assert record.tokens_saved == BEST_EFFORT.length - record.tokens_generated > 0


def test_tokens_saved_by_a_disconnect_counts_too(emu: ResponsesEmulator) -> None:
    """A non-background stream closed early is stopped: what it did not generate is saved."""
    with emu.client(max_retries=0) as client:
        stream = client.responses.create(model="slow", input="x", stream=True)
        for event in stream:
            if event.type == "response.output_text.delta":
                break
        stream.close()
    record = emu.ledger.responses[-1]
    emu.wait_for_sync(lambda _: record.status == "cancelled")
    assert record.stopped_by == "disconnect"
    assert record.tokens_saved == SLOW.length - record.tokens_generated


def test_request_count_counts_create_requests_and_requests_is_its_alias(
    emu: ResponsesEmulator,
) -> None:
    """ledger.request_count is the count; ledger.requests (an int that reads as a list) stays."""
    before = emu.ledger.request_count
    with emu.client(max_retries=0) as client:
        client.responses.create(model="fast", input="x")
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="nope", input="x")
    assert emu.ledger.request_count == before + 2
    assert emu.ledger.requests == emu.ledger.request_count


def test_cancel_best_effort_must_not_be_negative() -> None:
    """The fault's count is checked when the fault is built."""
    with pytest.raises(ValueError, match="cancel_best_effort must be >= 0 or None, got -1"):
        Faults(cancel_best_effort=-1)
