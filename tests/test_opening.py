"""Opening a guarded stream: what the shield covers, queues, busy pools, resume, stalls.

The open is shielded only from the moment its request leaves: a cancel that arrives while it
waits (for a ``max_concurrency`` slot, for a pooled connection) sends nothing; one that
arrives after waits for the id and cancels the response on the server.
"""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc
import openai
import pytest

import tether
from tests.support import read_deltas, requests_in_flight, settled
from tether._compat import OPENAI_MAJOR
from tether.testing import ResponsesEmulator

if OPENAI_MAJOR >= 3:
    import httpx2 as httpx
else:  # pragma: no cover - openai 2.x
    import httpx


def pool_of(emulator: ResponsesEmulator, size: int) -> openai.AsyncOpenAI:
    return emulator.async_client(
        http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=size))
    )


async def test_cancel_while_waiting_for_a_pooled_connection_sends_nothing(
    emulator: ResponsesEmulator,
) -> None:
    async with pool_of(emulator, 1) as client:
        async with tether.guarded_stream(client, model="slow", input="a") as first:
            await read_deltas(first, 1)  # holds the only connection
            with anyio.CancelScope() as waiting:
                async with anyio.create_task_group() as tg:

                    async def second() -> None:
                        async with tether.guarded_stream(client, model="slow", input="b"):
                            pytest.fail("the second stream must not open")

                    tg.start_soon(second)
                    await anyio.wait_all_tasks_blocked()
                    waiting.cancel()
            assert len(emulator.ledger.responses) == 1  # the second request never left
        assert requests_in_flight(client) == 0


async def test_scope_cancel_with_many_streams_queued_for_a_small_pool_sends_no_more(
    emulator: ResponsesEmulator,
) -> None:
    async with pool_of(emulator, 3) as client:
        async with tether.open_scope(client) as scope:
            async with anyio.create_task_group() as tg:
                for n in range(30):

                    async def one(n: int = n) -> None:
                        async with tether.guarded_stream(scope, model="slow", input=str(n)) as s:
                            async for _ in s:
                                pass

                    tg.start_soon(one)
                await emulator.wait_for(lambda ledger: len(ledger.responses) == 3)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
    assert not isinstance(scope, BaseException)  # exited quietly: no StallError, no group
    assert len(emulator.ledger.responses) == 3
    for record in emulator.ledger.responses:
        assert (await settled(emulator, record.id)).status == "cancelled"


async def test_scope_cancel_while_streams_wait_for_created_exits_quietly(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with emulator.hold("created") as hold:
        async with tether.open_scope(client) as scope:
            async with anyio.create_task_group() as tg:
                for n in range(5):

                    async def one(n: int = n) -> None:
                        async with tether.guarded_stream(scope, model="slow", input=str(n)):
                            pytest.fail("no body may run")

                    tg.start_soon(one)
                await emulator.wait_for(lambda ledger: len(ledger.responses) == 5)
                scope.cancel()
                hold.release()
    assert [o.reason for o in scope.outcomes] == ["scope_cancelled"] * 5
    for record in emulator.ledger.responses:
        assert (await settled(emulator, record.id)).status == "cancelled"


async def test_deadline_around_an_opening_stream_is_caught_not_reported_as_a_stall(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    guarded = tether.guarded_stream(client, model="slow", input="hi")
    around = anyio.CancelScope()

    async def opener() -> None:
        with around:
            async with guarded:
                pytest.fail("the body must not run")

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            around.deadline = anyio.current_time()  # the deadline passes while opening
            await anyio.wait_all_tasks_blocked()
            hold.release()
    assert around.cancelled_caught
    assert guarded.outcome.reason == "deadline"
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"


@pytest.mark.leaves_responses_generating(
    "response.created is held past the first-event timeout: no id reaches tether to cancel it with"
)
async def test_enclosing_cancel_during_a_first_event_stall_is_not_a_stall_error(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The enclosing scope was cancelled first: it wins over the first-event timeout."""
    guarded = tether.guarded_stream(client, model="fast", input="hi", first_event_timeout=0.3)
    around = anyio.CancelScope()

    async def opener() -> None:
        with around:
            async with guarded:
                pytest.fail("the body must not run")

    with emulator.hold("created"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            around.cancel()  # then the 0.3 s first-event timeout expires, still held
    assert around.cancelled_caught  # no StallError escaped
    assert guarded.outcome.reason == "scope_cancelled"


# ------------------------------------------------------------------- the max_concurrency queue


async def test_cancel_of_a_queued_stream_returns_at_once_and_sends_nothing(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client, max_concurrency=1) as scope:
        async with tether.guarded_stream(scope, model="slow", input="a") as first:
            await read_deltas(first, 1)
            queued = tether.guarded_stream(scope, model="slow", input="b")
            async with anyio.create_task_group() as tg:

                async def owner() -> None:
                    async with queued as stream:
                        async for _ in stream:
                            pytest.fail("a cancelled queued stream yields nothing")

                tg.start_soon(owner)
                await anyio.wait_all_tasks_blocked()
                receipt = await queued.cancel()  # the slot is still held by `first`
            assert receipt.kind == "none"
            assert receipt.response_id is None
            assert len(emulator.ledger.responses) == 1
    assert queued.outcome.reason == "explicit"


async def test_a_stream_cancelled_while_queued_runs_its_body_without_id_or_events(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """As docs/cancellation.md says: the body runs, response_id None, nothing to read."""
    seen: list[object] = []
    async with tether.open_scope(client, max_concurrency=1) as scope:
        async with tether.guarded_stream(scope, model="slow", input="a") as first:
            await read_deltas(first, 1)
            queued = tether.guarded_stream(scope, model="slow", input="b")
            async with anyio.create_task_group() as tg:

                async def owner() -> None:
                    async with queued as stream:
                        seen.append(stream.response_id)
                        seen.extend([event async for event in stream])

                tg.start_soon(owner)
                await anyio.wait_all_tasks_blocked()
                await queued.cancel()
    assert seen == [None]
    assert queued.outcome.reason == "explicit"
    assert len(emulator.ledger.responses) == 1


async def test_cancel_of_a_queued_stream_whose_task_was_cancelled_does_not_hang(
    client: openai.AsyncOpenAI,
) -> None:
    async with tether.open_scope(client, max_concurrency=1) as scope:
        async with tether.guarded_stream(scope, model="slow", input="a") as first:
            await read_deltas(first, 1)
            queued = tether.guarded_stream(scope, model="slow", input="b")
            with anyio.CancelScope() as owner_scope:
                async with anyio.create_task_group() as tg:

                    async def owner() -> None:
                        async with queued:
                            pytest.fail("never opens")

                    tg.start_soon(owner)
                    await anyio.wait_all_tasks_blocked()
                    owner_scope.cancel()
            with anyio.move_on_after(10) as watchdog:
                receipt = await queued.cancel()
            assert not watchdog.cancel_called
            assert receipt.response_id is None


async def test_a_queued_stream_counts_its_time_from_the_request_not_the_queue(
    client: openai.AsyncOpenAI,
) -> None:
    async with tether.open_scope(client, max_concurrency=1) as scope:
        first = tether.guarded_stream(scope, model="fast", input="a")
        second = tether.guarded_stream(scope, model="fast", input="b")
        first_open = anyio.Event()

        async def run_second() -> None:
            async with second as stream:
                await stream.get_final_response()

        async with anyio.create_task_group() as tg:
            async with first as stream:
                tg.start_soon(run_second)
                await anyio.wait_all_tasks_blocked()  # the second one queues meanwhile
                first_open.set()
                await stream.get_final_response()
    assert first_open.is_set()
    assert second.outcome.started_at >= first.outcome.ended_at  # not when it queued


# ------------------------------------------------------------------------------- resume


async def test_resume_against_a_server_that_never_answers_raises_stall_error() -> None:
    """A detached response resumed on a server that accepts and never answers: a StallError,
    never a silently empty stream. The choice: the response is cancelled (within grace)."""

    async def silent(conn: anyio.abc.SocketStream) -> None:
        async with conn:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while await conn.receive():
                    pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        async with openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0
        ) as client:
            handle = tether.DetachedResponse(response_id="resp_gone", last_sequence_number=3)
            resumed = tether.resume(client, handle, first_event_timeout=0.2, grace=0.2)
            with pytest.raises(tether.StallError) as caught:
                async with resumed:
                    pytest.fail("the body must not run")
        tg.cancel_scope.cancel()
    assert caught.value.kind == "first_event"
    assert resumed.outcome.reason == "stalled"
    assert resumed.outcome.receipt is not None  # a cancel was attempted, within grace
    assert not resumed.outcome.receipt.stopped


# ------------------------------------------------------------------------------ deadline=


async def test_a_stream_deadline_cancels_on_the_server_and_raises_deadline_exceeded(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    guarded = tether.guarded_stream(client, model="slow", input="hi", deadline=1.0)
    with pytest.raises(tether.DeadlineExceeded):
        async with guarded as stream:
            async for _ in stream:
                pass
    assert guarded.outcome.reason == "deadline"
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"
