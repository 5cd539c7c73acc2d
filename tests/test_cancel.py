"""The server-side cancel (``_cancel.py``): best effort on the live API, told truthfully."""

from __future__ import annotations

from pathlib import Path

import anyio
import openai
import pytest

import tether
import tether.sync
from tests.support import read_deltas, settled
from tether._cancel import _retrieve_status, cancel_slots  # pyright: ignore[reportPrivateUsage]
from tether._compat import HTTP, OPENAI_MAJOR
from tether.testing import EmulatedModel, Faults, ResponsesEmulator


def best_effort(status: str) -> EmulatedModel:
    """The cancel answers 200 ``cancelled``, the model goes on for 30 tokens, then *status*."""
    return EmulatedModel(
        ttft=0.0,
        tokens_per_s=400.0,
        length=2000,
        faults=Faults(cancel_best_effort=30, cancel_best_effort_status=status),  # type: ignore[arg-type]
    )


async def test_confirm_reports_what_the_server_finally_said_after_a_best_effort_cancel(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    async with tether.open_scope(client, confirm=True) as scope:
        async with tether.guarded_stream(scope, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert receipt.status == "completed"  # not the "cancelled" the cancel call answered
    assert (await settled(emulator, stream.response_id)).status == "completed"


async def test_no_event_after_the_stop_reaches_user_code(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    seen_after: list[str] = []
    async with tether.guarded_stream(client, model="best-effort", input="hi") as stream:
        await read_deltas(stream, 1)
        await stream.cancel()
        seen_after.extend([event.type async for event in stream])
    assert seen_after == []
    assert stream.outcome.deltas == 1


async def test_a_cancelled_response_without_usage_is_reported_without_assuming_one(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("cancelled")
    async with tether.open_scope(client, confirm=True) as scope:
        async with tether.guarded_stream(scope, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"
    assert stream.outcome.usage is None
    assert stream.outcome.cleanup_error is None


# ------------------------------------------- best effort: the default receipt is honest


async def test_a_best_effort_cancel_that_completed_anyway_is_reported_completed_by_default(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    async with tether.guarded_stream(client, model="best-effort", input="hi") as stream:
        await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.status, receipt.confirmed) == ("completed", True)
    assert (await settled(emulator, stream.response_id)).status == "completed"


async def test_an_honoured_cancel_is_confirmed_by_one_read_back(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.status, receipt.confirmed, receipt.stopped) == ("cancelled", True, True)
    assert emulator.ledger[stream.response_id or ""].status == "cancelled"


async def test_explicit_cancel_returns_the_receipt_the_server_finally_gave(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    async with tether.guarded_stream(client, model="best-effort", input="hi") as stream:
        await read_deltas(stream, 1)
        receipt = await stream.cancel()
    assert (receipt.status, receipt.confirmed) == ("completed", True)


async def test_inside_open_scope_the_receipt_is_read_back_by_the_block_s_exit(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    async with tether.open_scope(client) as scope:
        async with tether.guarded_stream(scope, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
        receipt = stream.outcome.receipt
        assert receipt is not None
        assert (receipt.status, receipt.confirmed) == ("completed", True)


@pytest.mark.leaves_responses_generating(
    "the best-effort cancel lets the response run 1000 more tokens (50 s): it outlives the test"
)
async def test_a_cancel_not_honoured_within_grace_keeps_the_journal_entry_and_says_so(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["lazy"] = EmulatedModel(
        ttft=0.0, tokens_per_s=20.0, length=2000, faults=Faults(cancel_best_effort=1000)
    )
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal, grace=0.3) as scope:
        async with tether.guarded_stream(scope, model="lazy", input="hi") as stream:
            await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.status, receipt.confirmed, receipt.stopped) == ("in_progress", False, False)
    assert stream.outcome.cleanup_error is not None
    assert "best-effort" in stream.outcome.cleanup_error
    (entry,) = await journal.entries()
    assert entry.response_id == stream.response_id


async def test_a_best_effort_cancel_that_ended_keeps_no_journal_entry(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal) as scope:
        async with tether.guarded_stream(scope, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "completed"
    assert await journal.entries() == []


async def test_a_cancel_not_honoured_is_an_event_observers_can_alert_on(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    overruled: list[tether.observe.StreamEvent.CancelOverruled] = []

    def watch(event: object) -> None:
        if isinstance(event, tether.observe.StreamEvent.CancelOverruled):
            overruled.append(event)

    with tether.observe.observing(watch):
        async with tether.guarded_stream(client, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
    assert [event.receipt.status for event in overruled] == ["completed"]
    assert overruled[0].receipt.response_id == stream.response_id


async def test_no_overruled_event_when_the_cancel_was_honoured(
    client: openai.AsyncOpenAI,
) -> None:
    seen: list[object] = []
    with tether.observe.observing(seen.append):
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
    assert not [e for e in seen if isinstance(e, tether.observe.StreamEvent.CancelOverruled)]


async def test_a_confirmed_cancel_reports_the_output_tokens_the_server_says_it_generated() -> None:
    """Where a cancelled response reports its usage (the live API's is null: then ``None``)."""
    slow = EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=2000)
    async with ResponsesEmulator(models={"slow": slow}, usage_on_cancel=True) as emulator:
        async with emulator.async_client() as client:
            async with tether.guarded_stream(client, model="slow", input="hi") as stream:
                await read_deltas(stream, 3)
        record = await settled(emulator, stream.response_id)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert receipt.confirmed
    assert receipt.output_tokens == record.tokens_generated >= 3


async def test_a_confirmed_cancel_without_usage_reports_no_output_tokens(
    client: openai.AsyncOpenAI,
) -> None:
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.confirmed, receipt.output_tokens) == (True, None)


async def test_a_cancel_before_any_output_item_reports_zero_output_tokens(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The read-back lists no output item and no usage: the response generated nothing."""
    emulator.models["silent"] = EmulatedModel(ttft=60.0, tokens_per_s=40.0, length=20)
    async with tether.guarded_stream(client, model="silent", input="hi") as stream:
        async for _ in stream:
            if stream.response_id is not None:
                break
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.status, receipt.confirmed, receipt.output_tokens) == ("cancelled", True, 0)
    assert (await settled(emulator, stream.response_id)).tokens_generated == 0


async def test_the_sdk_read_back_counts_a_response_without_output_items_as_zero_tokens(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The read-back through the SDK (no lean request) agrees with the lean one."""
    emulator.models["silent"] = EmulatedModel(ttft=60.0, tokens_per_s=40.0, length=20)
    created = await client.responses.create(model="silent", input="hi", background=True)
    await client.responses.cancel(created.id)
    assert await _retrieve_status(client, created.id, None) == ("cancelled", 0)


async def test_the_sdk_read_back_of_a_response_cut_mid_output_reports_unknown_tokens(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Output items but no usage: what they cost is unknown, not zero."""
    async with tether.guarded_stream(client, model="slow", input="hi") as stream:
        await read_deltas(stream, 1)
    assert stream.response_id is not None
    assert await _retrieve_status(client, stream.response_id, None) == ("cancelled", None)


async def test_confirm_false_trusts_the_cancel_s_answer_without_reading_it_back(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    async with tether.open_scope(client, confirm=False) as scope:
        async with tether.guarded_stream(scope, model="best-effort", input="hi") as stream:
            await read_deltas(stream, 1)
    receipt = stream.outcome.receipt
    assert receipt is not None
    # what the cancel answered, not what the server finally did: nothing read it back
    assert (receipt.status, receipt.confirmed, receipt.output_tokens) == ("cancelled", False, None)
    assert (await settled(emulator, stream.response_id)).status == "completed"


async def test_confirm_false_removes_the_journal_entry_on_a_cancelled_answer(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal, confirm=False) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.confirmed is False
    assert await journal.entries() == []


async def test_the_read_back_holds_the_cancel_slot_until_the_server_s_final_word(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot, two stops: the second cancel waits for the first read-back, not only for the
    first cancel's answer (a thousand stops would otherwise send a thousand read-backs at once)."""
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 1)
    emulator.models["best-effort"] = best_effort("completed")
    streams: list[tether.GuardedStream] = []
    both_read = anyio.Event()

    async def read(scope: tether.Scope) -> None:
        async with tether.guarded_stream(scope, model="best-effort", input="x") as stream:
            streams.append(stream)
            await read_deltas(stream, 1)
            if len(streams) == 2:
                both_read.set()
            await anyio.sleep_forever()

    async with tether.open_scope(client) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, scope)
            tg.start_soon(read, scope)
            await both_read.wait()
            scope.cancel()  # two stops at once, in two tasks
    first, second = streams
    records = sorted(
        (emulator.ledger[s.response_id or ""] for s in (first, second)),
        key=lambda r: r.cancel_requested_at or 0.0,
    )
    assert records[0].finished_at is not None
    assert records[1].cancel_requested_at is not None
    # the first read back until its response ended "completed"; only then the second cancel
    assert records[1].cancel_requested_at >= records[0].finished_at
    assert [s.outcome.receipt.status for s in (first, second) if s.outcome.receipt] == [
        "completed",
        "completed",
    ]


def test_the_sync_facade_reports_a_best_effort_cancel_that_completed_anyway(
    emulator: ResponsesEmulator,
) -> None:
    emulator.models["best-effort"] = best_effort("completed")
    with emulator.client() as client:
        with tether.sync.guarded_stream(client, model="best-effort", input="hi") as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    break
    receipt = stream.outcome.receipt
    assert receipt is not None
    assert (receipt.status, receipt.confirmed) == ("completed", True)


# ---------------------------------------------------------------- the stop's own requests


async def test_the_cancel_carries_the_headers_the_stream_was_opened_with(
    emulator: ResponsesEmulator,
) -> None:
    async with emulator.async_client(default_headers={"OpenAI-Project": "proj_1"}) as client:
        async with tether.guarded_stream(
            client, model="slow", input="hi", extra_headers={"X-Route": "blue"}
        ) as stream:
            await read_deltas(stream, 1)
    headers = emulator.ledger[stream.response_id or ""].cancel_headers
    assert (headers["openai-project"], headers["x-route"]) == ("proj_1", "blue")
    assert headers["authorization"] == "Bearer sk-emulator"


async def test_a_cancel_refused_for_a_rotated_key_is_sent_again_with_the_client_s_new_key(
    emulator: ResponsesEmulator,
) -> None:
    emulator.api_key = "sk-old"
    async with emulator.async_client() as client:
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)
            emulator.api_key = client.api_key = "sk-new"  # rotated while it streams
    record = await settled(emulator, stream.response_id)
    assert (record.status, record.cancel_statuses) == ("cancelled", [200])  # 401s never get in
    assert record.cancel_headers["authorization"] == "Bearer sk-new"
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.error is None


async def test_a_request_without_the_emulator_s_key_is_refused_like_the_api_refuses_it(
    emulator: ResponsesEmulator,
) -> None:
    emulator.api_key = "sk-right"
    async with emulator.async_client(api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.responses.create(model="fast", input="hi")
    assert refused.value.code == "invalid_api_key"


async def stop_many_with_cancels_held(
    emulator: ResponsesEmulator,
    streams: int,
    slots: int,
    client: openai.AsyncOpenAI | None = None,
) -> int:
    """Open *streams* guarded streams in one scope, then cancel the scope while the emulator
    holds every cancel: once *slots* cancels are in flight and every task is blocked, count
    the running tasks; then let the cancels through. Returns that count. Through *client*
    if given (closed here), else a default one."""
    emulator.models["slow-cancel"] = EmulatedModel(ttft=0.0, tokens_per_s=5.0, length=2000)
    opened = tasks = 0
    all_open = anyio.Event()

    async def one(scope: tether.Scope) -> None:
        nonlocal opened
        async with tether.guarded_stream(scope, model="slow-cancel", input="hi") as stream:
            opened += 1
            if opened == streams:
                all_open.set()
            async for _ in stream:
                pass

    async with client or emulator.async_client() as client:
        async with tether.open_scope(client, grace=10) as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(streams):
                    tg.start_soon(one, scope)
                await all_open.wait()
                with emulator.hold("cancel"), anyio.CancelScope(shield=True):
                    scope.cancel()  # no cancel is answered until every stop got a slot or waits
                    await emulator.wait_for(lambda ledger: ledger.cancels_in_flight >= slots)
                    await anyio.wait_all_tasks_blocked()  # the others wait for a slot
                    tasks = len(anyio.get_running_tasks())
    return tasks


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai 2.x (httpcore 1.x) keeps 64 slots")
async def test_a_scope_stopping_100_streams_sends_their_100_cancels_at_once(
    emulator: ResponsesEmulator,
) -> None:
    """The SDK's default pool keeps 100 connections alive: 100 cancels leave in one wave
    (a race's 100 losers sent 64, and the other 36 waited for an answer)."""
    await stop_many_with_cancels_held(emulator, streams=100, slots=100)
    assert emulator.ledger.max_concurrent_cancels == 100
    assert [r.status for r in emulator.ledger].count("cancelled") == 100


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai 2.x (httpcore 1.x) keeps 64 slots")
async def test_a_scope_stopping_more_streams_than_the_pool_keeps_alive_queues_the_rest(
    emulator: ResponsesEmulator,
) -> None:
    await stop_many_with_cancels_held(emulator, streams=130, slots=100)
    assert emulator.ledger.max_concurrent_cancels == 100
    assert [r.status for r in emulator.ledger].count("cancelled") == 130


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai 2.x (httpcore 1.x) keeps 64 slots")
@pytest.mark.parametrize(
    ("limits", "slots"),
    [
        (None, 100),  # the SDK's default pool: 1,000 connections, 100 kept alive
        ({"max_connections": 100, "max_keepalive_connections": 20}, 64),  # at least 64
        ({"max_connections": 12}, 12),  # never more than the pool may open
        ({"max_connections": 500, "max_keepalive_connections": 200}, 200),
    ],
)
async def test_cancel_slots_follow_the_pool_s_keepalive_within_its_max_connections(
    emulator: ResponsesEmulator, limits: dict[str, int] | None, slots: int
) -> None:
    kwargs = (
        {}
        if limits is None
        else {"http_client": openai.DefaultAsyncHttpxClient(limits=HTTP.Limits(**limits))}
    )
    async with emulator.async_client(**kwargs) as client:
        assert cancel_slots(client).total_tokens == slots


async def test_cancel_slots_are_64_where_the_client_s_pool_does_not_say(
    emulator: ResponsesEmulator,
) -> None:
    http = openai.DefaultAsyncHttpxClient(transport=HTTP.MockTransport(lambda _: None))
    async with emulator.async_client(http_client=http) as client:
        assert cancel_slots(client).total_tokens == 64


async def test_a_stop_waiting_for_a_cancel_slot_holds_no_task_of_its_own(
    emulator: ResponsesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 2)
    tasks = await stop_many_with_cancels_held(emulator, streams=10, slots=2)
    # the 10 readers, the 2 cancels in flight (a task each), the test's own: not 8 more
    assert tasks <= 10 + 2 + 3
    assert emulator.ledger.max_concurrent_cancels == 2
    assert [r.status for r in emulator.ledger].count("cancelled") == 10


async def test_streams_queued_for_a_concurrency_slot_send_nothing_while_open_ones_queue_to_cancel(
    emulator: ResponsesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``max_concurrency=3``, one cancel slot, six streams: three open, three wait to open;
    cancelling the scope sends three cancels, one at a time, and nothing for the others
    (a slot freed by a stop is not taken by an opener whose scope is cancelled)."""
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 1)
    emulator.models["slow-cancel"] = EmulatedModel(ttft=0.0, tokens_per_s=5.0, length=2000)
    opened = 0
    three_open = anyio.Event()

    async def one(scope: tether.Scope) -> None:
        nonlocal opened
        async with tether.guarded_stream(scope, model="slow-cancel", input="hi") as stream:
            opened += 1
            if opened == 3:
                three_open.set()
            async for _ in stream:
                pass

    async with emulator.async_client() as client:
        async with tether.open_scope(client, grace=10, max_concurrency=3) as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(one, scope)
                await three_open.wait()
                await anyio.wait_all_tasks_blocked()  # the other three wait for a slot
                with emulator.hold("cancel"), anyio.CancelScope(shield=True):
                    scope.cancel()
                    await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
                    await anyio.wait_all_tasks_blocked()  # two stops queue behind it
    assert opened == 3
    assert len(emulator.ledger.responses) == 3
    assert [r.status for r in emulator.ledger] == ["cancelled"] * 3
    assert emulator.ledger.max_concurrent_cancels == 1


async def test_a_stop_whose_grace_runs_out_waiting_for_a_slot_sends_nothing_and_says_so(
    emulator: ResponsesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 1)
    emulator.models["slow-cancel"] = EmulatedModel(ttft=0.0, tokens_per_s=5.0, length=2000)
    opened = {"holder": anyio.Event(), "queued": anyio.Event()}
    ended = anyio.Event()
    streams: dict[str, tether.GuardedStream] = {}

    async def one(scope: tether.Scope, name: str, grace: float, stop: anyio.CancelScope) -> None:
        with stop:
            async with tether.guarded_stream(
                scope, model="slow-cancel", input="hi", grace=grace
            ) as stream:
                streams[name] = stream
                opened[name].set()
                async for _ in stream:
                    pass
        if name == "queued":
            ended.set()

    async with emulator.async_client() as client:
        with emulator.hold("cancel") as hold:
            async with tether.open_scope(client) as scope:
                stop_holder, stop_queued = anyio.CancelScope(), anyio.CancelScope()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(one, scope, "holder", 30.0, stop_holder)
                    tg.start_soon(one, scope, "queued", 0.3, stop_queued)
                    await opened["holder"].wait()
                    await opened["queued"].wait()
                    stop_holder.cancel()  # its cancel takes the one slot; the emulator holds it
                    await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
                    stop_queued.cancel()  # queues behind it, for longer than its grace
                    await ended.wait()
                    hold.release()
        queued = streams["queued"].outcome.receipt
        assert queued is not None
        assert queued.attempts == 0
        assert (queued.error or "").startswith("no answer within grace=")
        assert emulator.ledger.cancel_requests == 1
        await client.responses.cancel(streams["queued"].response_id or "")  # tidy up
