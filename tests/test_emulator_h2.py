"""The emulator over HTTP/2 (h2c with prior knowledge, on hypercorn), with the SDK's own client.

What HTTP/2 changes for cancellation: every stream and every cancel of a client shares one
TCP connection, and a stream the client closes early is ended by RST_STREAM, if the
client's HTTP stack sends one. httpcore2 (under openai 3.x) and httpcore (2.x) never do:
they forget the stream, the server goes on sending, and the stream keeps its slot (100
per connection) until the server ends it. These tests pin down what the emulator does then.

Streams closed early are opened and closed without reading an event (their SDK generators
never start, so trio has nothing to warn about); their ids come from the ledger.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

from tether._compat import STREAM_CONNECTION_ERRORS
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

FAST = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=20)
SLOW = EmulatedModel(ttft=0.0, tokens_per_s=20.0, length=100_000)  # a few small events per second
FLOOD = EmulatedModel(
    ttft=0.0, tokens_per_s=5000.0, length=100_000
)  # fills a stream's window at once
IDLE = EmulatedModel(
    ttft=0.0, tokens_per_s=1.0, length=100_000
)  # runs on, costing the server ~nothing


@pytest.fixture(scope="module")
def emu() -> Iterator[ResponsesEmulator]:
    models = {
        "fast": FAST,
        "slow": SLOW,
        "idle": IDLE,
        "flood": FLOOD,
        "drops": EmulatedModel(
            ttft=0.0, tokens_per_s=2000.0, length=60, faults=Faults(drop_after=6)
        ),
    }
    with ResponsesEmulator(models=models, seed=3, http2=True) as emulator:
        yield emulator


async def open_and_abandon(
    client: openai.AsyncOpenAI, emu: ResponsesEmulator, **create: Any
) -> str:
    """Open a stream, close it without reading an event (no RST_STREAM is sent); its id."""
    count = len(emu.ledger)
    stream = await client.responses.create(input="Write an essay", stream=True, **create)
    await stream.close()
    await emu.wait_for(lambda ledger: len(ledger) > count)
    return emu.ledger.responses[count].id


async def test_h2_clients_speak_http2_and_a_stream_reads_to_its_end(emu: ResponsesEmulator) -> None:
    """async_client() on an http2 emulator negotiates nothing: HTTP/2 from the first byte."""
    async with emu.async_client(max_retries=0) as client:
        raw = await client.responses.with_raw_response.create(model="fast", input="Hi")
        stream = await client.responses.create(model="fast", input="Hi", stream=True)
        types = [event.type async for event in stream]
    assert raw.http_response.http_version == "HTTP/2"
    assert raw.parse().status == "completed"
    assert types.count("response.output_text.delta") == FAST.length
    assert types[-1] == "response.completed"


def test_h2_sync_client_speaks_http2(emu: ResponsesEmulator) -> None:
    """client() too, and http2=False still gets HTTP/1.1 from the same port."""
    with emu.client(max_retries=0) as client, emu.client(http2=False, max_retries=0) as h1:
        raw = client.responses.with_raw_response.create(model="fast", input="Hi")
        raw1 = h1.responses.with_raw_response.create(model="fast", input="Hi")
    assert raw.http_response.http_version == "HTTP/2"
    assert raw1.http_response.http_version == "HTTP/1.1"


def test_http2_client_on_an_http1_emulator_is_refused() -> None:
    """uvicorn speaks HTTP/1.1 only: asking it for an HTTP/2 client is an error, not a hang."""
    emulator = ResponsesEmulator(models={"fast": FAST})
    with pytest.raises(ValueError, match="http2=True"):
        emulator.async_client(http2=True)
    h2 = ResponsesEmulator(models={"fast": FAST}, http2=True)
    with pytest.raises(ValueError, match="http_client"):
        h2.client(http2=True, http_client=object())


async def test_h2_cancel_on_the_same_connection_ends_the_live_stream(
    emu: ResponsesEmulator,
) -> None:
    """The cancel is multiplexed beside the stream it stops; the stream just ends."""
    types: list[str] = []
    rid = ""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="slow", input="x", stream=True, background=True
        )
        async for event in stream:
            types.append(event.type)
            if event.type == "response.created":
                rid = event.response.id
            if types.count("response.output_text.delta") == 2:
                cancelled = await client.responses.cancel(rid)
                assert cancelled.status == "cancelled"
        pool = client._client._transport._pool  # pyright: ignore[reportAttributeAccessIssue]
        assert len(pool.connections) == 1
    record = emu.ledger[rid]
    assert record.status == "cancelled"
    assert record.stopped_by == "cancel"
    assert len(types) == len(record.events)


async def test_h2_stream_closed_early_does_not_stop_a_non_background_response(
    emu: ResponsesEmulator,
) -> None:
    """No RST_STREAM: the server cannot tell, so closing the stream is NOT the cancel on h2.

    On HTTP/1.1 closing the stream closes the connection and stops the response. On h2 the
    response runs on until the client's connection closes.
    """
    async with emu.async_client(max_retries=0) as client:
        rid = await open_and_abandon(client, emu, model="slow")
        record = emu.ledger[rid]
        await emu.wait_for(lambda _: record.tokens_generated >= 3)
        assert record.status == "in_progress"
        assert record.listeners == 1  # the server still streams to the abandoned stream
    await emu.wait_for(lambda _: record.status == "cancelled")
    assert record.stopped_by == "disconnect"


async def test_h2_dropped_client_leaves_background_responses_generating(
    emu: ResponsesEmulator,
) -> None:
    """A client whose connection drops: its streams end, background responses run on (orphans)."""
    async with emu.async_client(max_retries=0) as client:
        stream = await client.responses.create(
            model="slow", input="x", stream=True, background=True
        )
        await emu.wait_for(lambda ledger: ledger.responses[-1].listeners == 1)
        record = emu.ledger.responses[-1]
        await stream.close()
    await emu.wait_for(lambda _: record.listeners == 0)
    seen = record.tokens_generated
    await emu.wait_for(lambda _: record.tokens_generated >= seen + 2)
    assert record in emu.ledger.orphans()
    async with emu.async_client(max_retries=0) as client:
        assert (await client.responses.cancel(record.id)).status == "cancelled"
    assert record not in emu.ledger.orphans()


def test_h2_drop_after_resets_one_stream_and_the_connection_goes_on(emu: ResponsesEmulator) -> None:
    """drop_after on h2 is RST_STREAM: the read raises, and the same connection resumes it."""
    with emu.client(max_retries=0) as client:
        stream = client.responses.create(model="drops", input="x", stream=True, background=True)
        last = -1
        rid = ""
        with pytest.raises(STREAM_CONNECTION_ERRORS):
            for event in stream:
                last = event.sequence_number
                if event.type == "response.created":
                    rid = event.response.id
        assert last == 5
        resumed = client.responses.retrieve(rid, stream=True, starting_after=last)
        events = list(resumed)
        pool = client._client._transport._pool  # pyright: ignore[reportAttributeAccessIssue]
        assert len(pool.connections) == 1
    assert [e.sequence_number for e in events] == list(range(6, 6 + len(events)))
    assert events[-1].type == "response.completed"


async def test_h2_connection_serves_new_streams_after_120_abandoned_and_cancelled(
    emu: ResponsesEmulator,
) -> None:
    """Abandoned streams whose responses are cancelled are ended by the server: no slot leaks.

    120 streams opened and closed early on one connection (past the 100-stream limit),
    each response cancelled on the same connection: the server finishes each stream, the
    client's h2 state frees its slot, and the connection still serves new requests.
    """
    async with emu.async_client(max_retries=0) as client:
        for _ in range(120):
            rid = await open_and_abandon(client, emu, model="idle", background=True)
            assert (await client.responses.cancel(rid)).status == "cancelled"
        response = await client.responses.create(model="fast", input="x")
        pool = client._client._transport._pool  # pyright: ignore[reportAttributeAccessIssue]
        assert len(pool.connections) == 1
    assert response.status == "completed"
    await emu.wait_for(lambda ledger: all(r.listeners == 0 for r in ledger))


async def test_h2_100_abandoned_running_streams_exhaust_the_connection() -> None:
    """Known client limitation, shown: streams closed early keep their slot while they run.

    httpcore2 sends no RST_STREAM, so 100 abandoned streams whose responses go on take
    every slot of the connection (hypercorn's and the client's max_concurrent_streams is
    100): the next request on that connection fails with APIConnectionError. A cancel
    from another connection ends them.
    """
    async with ResponsesEmulator(models={"idle": IDLE, "fast": FAST}, http2=True) as emu:
        async with emu.async_client(max_retries=0) as client:
            for _ in range(100):
                await open_and_abandon(client, emu, model="idle", background=True)
            await emu.wait_for(lambda ledger: sum(r.listeners for r in ledger) == 100)
            with pytest.raises(openai.APIConnectionError):
                await client.responses.create(model="fast", input="x")
        async with emu.async_client(max_retries=0) as other:
            for record in emu.ledger:
                if record.generating:
                    await other.responses.cancel(record.id)
        await emu.wait_for(lambda ledger: not ledger.orphans())


def abandon_with_a_raw_h2_client(emu: ResponsesEmulator) -> tuple[list[Any], int]:
    """Open a FLOOD stream with the h2 library's own client (64 KiB windows), never read it.

    httpcore2 opens a 16 MiB window per stream, so it only blocks a stream after 16 MiB;
    a client on the protocol's default window blocks it after 64 KiB. Once the stream is
    blocked and its response cancelled, read what the server sends on the stream.
    Returns the stream's events after the cancel, and the DATA bytes received in all.
    """
    import h2.config
    import h2.connection
    import h2.events

    with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        body = json.dumps({"model": "flood", "input": "x", "stream": True, "background": True})
        headers = [
            (":method", "POST"),
            (":path", "/v1/responses"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{emu.port}"),
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-emulator"),
        ]
        conn.send_headers(1, headers)
        conn.send_data(1, body.encode(), end_stream=True)
        count = len(emu.ledger)  # before the request leaves: the server may record it at once
        sock.sendall(conn.data_to_send())
        emu.wait_for_sync(lambda ledger: len(ledger) > count)
        record = emu.ledger.responses[count]
        emu.wait_for_sync(lambda _: record.tokens_generated >= 2_000)  # ~500 kB > 64 KiB
        with emu.client(http2=False, max_retries=0) as other:
            assert other.responses.cancel(record.id).status == "cancelled"
        received = 0
        events: list[Any] = []
        while not any(
            isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded)) for e in events
        ):
            data = sock.recv(65536)  # the socket's timeout bounds the wait
            if not data:
                break
            for event in conn.receive_data(data):  # DATA never acknowledged: the window stays shut
                if isinstance(event, h2.events.DataReceived):
                    received += event.flow_controlled_length or 0
                elif getattr(event, "stream_id", None) == 1:
                    events.append(event)
            sock.sendall(conn.data_to_send())  # SETTINGS and PING acks only
        return events, received


async def test_h2_server_resets_a_blocked_abandoned_stream_once_its_response_ended(
    emu: ResponsesEmulator,
) -> None:
    """A stream nobody reads, its flow-control window shut, is reset after its response ends.

    Without the reset it would stay open for good, its slot taken: the server cannot send
    the rest of the log (the client never reads it) and the client never resets it.
    """
    import h2.errors
    import h2.events

    events, received = await anyio.to_thread.run_sync(abandon_with_a_raw_h2_client, emu)
    assert received <= 65_535  # the server kept to the window
    assert [type(e) for e in events][-1] is h2.events.StreamReset
    assert events[-1].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    await emu.wait_for(lambda ledger: ledger.responses[-1].listeners == 0)


async def test_h2_emulator_starts_and_stops_cleanly_with_streams_open() -> None:
    """Stopping an h2 emulator ends its streams and joins its thread, on any backend."""
    async with ResponsesEmulator(models={"slow": SLOW}, http2=True) as emu:
        async with emu.async_client(max_retries=0) as client:
            await open_and_abandon(client, emu, model="slow", background=True)
            port = emu.port
    assert emu._thread is None  # pyright: ignore[reportPrivateUsage]
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.parametrize("http2", [False, True])
def test_emulator_http2_fixture_runs_a_test_on_both_protocols(
    emulator_http2: bool, http2: bool
) -> None:
    """The plugin's emulator_http2 fixture parametrizes a test over HTTP/1.1 and HTTP/2."""
    del http2
    with ResponsesEmulator(models={"fast": FAST}, http2=emulator_http2) as emulator:
        with emulator.client(max_retries=0) as client:
            raw = client.responses.with_raw_response.create(model="fast", input="x")
    assert raw.http_response.http_version == ("HTTP/2" if emulator_http2 else "HTTP/1.1")


def test_responses_emulator_h2_fixture_serves_http2(
    responses_emulator_h2: ResponsesEmulator,
) -> None:
    """responses_emulator_h2: default models, over HTTP/2."""
    assert responses_emulator_h2.http2
    with responses_emulator_h2.client() as client:
        raw = client.responses.with_raw_response.create(model="gpt-5-nano", input="x")
    assert raw.http_response.http_version == "HTTP/2"
