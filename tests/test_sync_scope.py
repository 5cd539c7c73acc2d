"""tether.sync.open_scope: one portal, one async client, one deadline for many sync blocks.

Every test runs with the portal on asyncio and on trio. Tests synchronise on the emulator's
ledger (``wait_for_sync``) and on events, never on sleeps.
"""

from __future__ import annotations

import _thread
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

import tether
import tether.sync
from tests import sync_fixtures
from tests._http import httpx2
from tests.support import WATCHDOG, in_thread, portal_threads, read_deltas_sync
from tether._sync_job import Job

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tether.testing import ResponsesEmulator


EXIT_CHILD = Path(__file__).with_name("exit_child.py")


portal_backend = sync_fixtures.portal_backend  # autouse: asyncio and trio
client = sync_fixtures.client


def generating(response_id: str | None, tokens: int = 1) -> Callable[[Any], bool]:
    assert response_id is not None
    return lambda ledger: ledger[response_id].tokens_generated >= tokens


# ------------------------------------------------------------------- lifetime


def test_blocks_of_a_scope_share_one_portal_thread_joined_on_exit(client: openai.OpenAI) -> None:
    threads: list[list[threading.Thread]] = []
    with tether.sync.open_scope(client) as scope:
        for _ in range(2):
            with tether.sync.guarded_stream(scope, model="fast", input="hi") as stream:
                stream.get_final_response()
                threads.append(portal_threads())
    assert len(threads[0]) == 1
    assert threads[0] == threads[1]
    assert portal_threads() == []


def test_blocks_of_a_scope_reuse_the_connection(emulator: ResponsesEmulator) -> None:
    """One mirrored async client per scope: the second block finds the first's connection."""
    connects: list[str] = []

    def on_connect(request: httpx2.Request) -> None:
        connects.append(request.url.path)

    http = httpx2.Client(limits=httpx2.Limits(max_connections=1))
    with emulator.client(http_client=http) as sync_client:
        with tether.sync.open_scope(sync_client) as scope:
            for _ in range(2):
                with tether.sync.guarded_stream(scope, model="fast", input="hi") as stream:
                    stream.get_final_response()
            (twin,) = scope._twins.values()
            pool: Any = twin._client._transport._pool
            assert len(pool.connections) == 1
            assert pool.connections[0].info() is not None
    assert [outcome.reason for outcome in scope.outcomes] == ["completed", "completed"]


def test_scope_outcomes_record_every_stream_in_order(client: openai.OpenAI) -> None:
    with tether.sync.open_scope(client) as scope:
        with tether.sync.guarded_stream(scope, model="fast", input="hi") as first:
            first.get_final_response()
        with tether.sync.guarded_stream(scope, model="slow", input="hi") as second:
            next(second)
            assert scope.live == 1
        assert scope.live == 0
    assert [o.reason for o in scope.outcomes] == ["completed", "break"]
    assert scope.outcomes[1].response_id == second.response_id


def _deltas(scope: tether.sync.Scope, streams: list[tether.sync.GuardedStream]) -> Iterator[str]:
    """What an app writes to hand a response to its caller: a generator around the block."""
    with tether.sync.guarded_stream(scope, model="slow", input="x") as stream:
        streams.append(stream)
        yield from stream.text_deltas()


def test_a_stream_left_open_in_an_unclosed_generator_is_cancelled_when_its_scope_exits(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    streams: list[tether.sync.GuardedStream] = []
    kept: list[Iterator[str]] = []

    def scenario() -> None:
        with tether.sync.open_scope(client) as scope:
            deltas = _deltas(scope, streams)
            next(deltas)  # the consumer takes one delta and walks away
            kept.append(deltas)

    watchdog = in_thread(scenario)
    watchdog.join(WATCHDOG)
    assert not watchdog.is_alive(), "the scope's exit waited for a block left open"
    record = emulator.ledger[streams[0].response_id or ""]
    assert (record.status, record.cancel_calls) == ("cancelled", 1)
    kept[0].close()


def test_a_generator_read_on_after_its_scope_exited_ends_with_the_reason_scope_exited(
    client: openai.OpenAI,
) -> None:
    streams: list[tether.sync.GuardedStream] = []
    with tether.sync.open_scope(client) as scope:
        deltas = _deltas(scope, streams)
        next(deltas)
    assert list(deltas) == []  # what was read ahead is dropped, as after any early stop
    outcome = streams[0].outcome
    assert (outcome.reason, outcome.status) == ("scope_exited", "cancelled")
    assert scope.outcomes == (outcome,)


def test_a_stream_another_thread_reads_when_the_scope_exits_ends_there_as_scope_exited(
    client: openai.OpenAI,
) -> None:
    reading = threading.Event()
    ended: list[object] = []

    def reader(scope: tether.sync.Scope) -> None:
        try:
            with tether.sync.guarded_stream(scope, model="slow", input="x") as stream:
                for _ in stream:
                    reading.set()
            ended.append(stream.outcome.reason)
        except BaseException as exc:  # pragma: no cover - what the test fails with
            ended.append(exc)

    with tether.sync.open_scope(client) as scope:
        thread = in_thread(lambda: reader(scope))
        assert reading.wait(WATCHDOG)
    thread.join(WATCHDOG)
    assert not thread.is_alive()
    assert ended == ["scope_exited"]


def test_cancel_of_a_block_left_open_past_its_scope_returns_the_receipt_of_the_scopes_stop(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    streams: list[tether.sync.GuardedStream] = []
    with tether.sync.open_scope(client) as scope:
        deltas = _deltas(scope, streams)
        next(deltas)
    receipt = streams[0].cancel()  # a stop button pressed as the scope exits
    assert (receipt.status, receipt.confirmed) == ("cancelled", True)
    assert emulator.ledger[receipt.response_id or ""].cancel_calls == 1
    deltas.close()
    assert streams[0].outcome.receipt == receipt


def _run_exit_child(
    emulator: ResponsesEmulator, backend: str, mode: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/exit_child.py`` in *mode* against *emulator*, to its end (bounded)."""
    return subprocess.run(
        [sys.executable, str(EXIT_CHILD), emulator.base_url, backend, mode],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(EXIT_CHILD.parent.parent / "src")},
        timeout=WATCHDOG * 3,
    )


@pytest.mark.parametrize("mode", ["raise", "end"])
def test_a_script_ending_with_a_stream_left_open_in_a_generator_exits_and_cancels_it(
    emulator: ResponsesEmulator, portal_backend: str, mode: str
) -> None:
    """The generator is collected only once the interpreter stops its daemon threads: its
    block's exit would wait for a portal that no longer runs, and the process never exit."""
    child = _run_exit_child(emulator, portal_backend, mode)
    assert child.stdout == "READ\n"
    assert child.returncode == (1 if mode == "raise" else 0), child.stderr
    (record,) = emulator.ledger.responses
    assert (record.status, record.cancel_calls) == ("cancelled", 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_of_a_process_with_a_scope_open_exits_normally(
    emulator: ResponsesEmulator, portal_backend: str
) -> None:
    """The child inherits the open scopes but none of their portal threads: exiting them
    there would wait forever. So a fork forgets them in the child."""
    child = _run_exit_child(emulator, portal_backend, "fork")
    assert (child.stdout, child.returncode) == ("FORKED 0\n", 0), child.stderr


def test_a_generator_closed_by_its_consumer_stops_its_stream_as_a_break(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    streams: list[tether.sync.GuardedStream] = []
    with tether.sync.open_scope(client) as scope:
        deltas = _deltas(scope, streams)
        next(deltas)
        deltas.close()  # GeneratorExit through the block: the consumer is done
        outcome = streams[0].outcome
        assert (outcome.reason, outcome.status) == ("break", "cancelled")
    assert emulator.ledger[outcome.response_id or ""].cancel_calls == 1


def test_remaining_and_deadline_come_from_the_async_scope(client: openai.OpenAI) -> None:
    with tether.sync.open_scope(client, deadline=30) as scope:
        assert 0 < scope.remaining() <= 30
        assert scope.deadline == pytest.approx(time.monotonic() + scope.remaining(), abs=1)
    with tether.sync.open_scope(client) as unbounded:
        assert unbounded.deadline == math.inf
        assert unbounded.remaining() == math.inf


def test_streams_from_several_threads_share_one_scope(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    errors: list[BaseException] = []

    with tether.sync.open_scope(client) as scope:

        def worker() -> None:
            try:
                with tether.sync.guarded_stream(scope, model="fast", input="hi") as stream:
                    stream.get_final_response()
            except BaseException as exc:  # reported to the test below
                errors.append(exc)

        workers = [in_thread(worker) for _ in range(3)]
        for thread in workers:
            thread.join(WATCHDOG)
    assert errors == []
    assert [o.reason for o in scope.outcomes] == ["completed"] * 3


def test_pool_of_one_connection_does_not_deadlock_across_blocks_of_a_scope(
    emulator: ResponsesEmulator,
) -> None:
    """Each break closes the stream (freeing the one connection) before the cancel POST."""
    paths: list[str] = []
    http = httpx2.Client(
        limits=httpx2.Limits(max_connections=1),
        event_hooks={"request": [lambda request: paths.append(request.url.path)]},
    )
    outcomes: list[tether.StreamOutcome] = []

    def scenario() -> None:
        with emulator.client(http_client=http) as sync_client:
            with tether.sync.open_scope(sync_client) as scope:
                for _ in range(2):
                    with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:
                        read_deltas_sync(stream, 1)
            outcomes.extend(scope.outcomes)

    watchdog = in_thread(scenario)
    watchdog.join(WATCHDOG)
    assert not watchdog.is_alive(), "deadlocked on a pool of one connection"
    assert [o.receipt.status for o in outcomes if o.receipt] == ["cancelled", "cancelled"]
    first, second = (o.response_id for o in outcomes)
    assert paths == [
        "/v1/responses",
        f"/v1/responses/{first}/cancel",
        f"/v1/responses/{first}",  # the cancel read back (best effort)
        "/v1/responses",
        f"/v1/responses/{second}/cancel",
        f"/v1/responses/{second}",
    ]


# ------------------------------------------------------------------- deadline


def test_scope_deadline_stops_the_stream_and_raises_deadline_exceeded(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded):
        with tether.sync.open_scope(client, deadline=1.0) as scope:
            with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:
                for _ in stream:  # a minute of tokens: only the deadline ends this
                    pass
    assert stream.outcome.reason == "deadline"
    response_id = stream.response_id
    assert response_id is not None
    assert emulator.ledger[response_id].status == "cancelled"
    assert portal_threads() == []


def test_scope_deadline_cancels_while_the_body_is_busy_and_the_block_raises(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    after_the_stream = False
    with pytest.raises(tether.DeadlineExceeded):
        with tether.sync.open_scope(client, deadline=1.0) as scope:
            with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:
                response_id = stream.response_id
                assert response_id is not None
                emulator.wait_for_sync(lambda ledger: ledger[response_id].status == "cancelled")
            after_the_stream = True
    assert not after_the_stream
    assert stream.outcome.reason == "deadline"


def test_stream_opened_after_the_deadline_raises_deadline_exceeded_and_sends_nothing(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded):
        with tether.sync.open_scope(client, deadline=1.0) as scope:
            with pytest.raises(tether.DeadlineExceeded):
                with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:
                    response_id = stream.response_id
                    assert response_id is not None
                    emulator.wait_for_sync(lambda ledger: ledger[response_id].status == "cancelled")
            with tether.sync.guarded_stream(scope, model="fast", input="hi"):
                pass
    assert emulator.ledger.requests == 1


# --------------------------------------------------------------------- cancel


def test_scope_cancel_from_another_thread_ends_the_iteration_and_exits_quietly(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.open_scope(client) as scope:
        with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:

            def stop_button() -> None:
                emulator.wait_for_sync(generating(stream.response_id, 2))
                scope.cancel()

            button = in_thread(stop_button)
            for _ in stream:  # ends when the other thread cancels the scope
                pass
            button.join()
        assert scope.cancel_called
    assert stream.outcome.reason == "scope_cancelled"
    response_id = stream.response_id
    assert response_id is not None
    emulator.wait_for_sync(lambda ledger: not ledger[response_id].generating)
    assert emulator.ledger[response_id].status == "cancelled"


def test_stream_opened_in_a_cancelled_scope_raises_and_sends_nothing(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.open_scope(client) as scope:
        scope.cancel()
        with pytest.raises(tether.TetherError, match=r"scope was cancelled \(scope\.cancel\(\)\)"):
            with tether.sync.guarded_stream(scope, model="fast", input="hi"):
                pass
    assert emulator.ledger.requests == 0


def test_ctrl_c_in_a_scope_cancels_the_stream_and_propagates_through_the_scope(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")
    presser: threading.Thread | None = None
    with pytest.raises(KeyboardInterrupt):
        with tether.sync.open_scope(client) as scope:
            with tether.sync.guarded_stream(scope, model="slow", input="hi") as stream:

                def user() -> None:
                    emulator.wait_for_sync(generating(stream.response_id, 2))
                    _thread.interrupt_main()

                presser = in_thread(user)
                for _ in stream:
                    pass
    assert presser is not None
    presser.join()
    assert stream.outcome.reason == "interrupted"
    assert portal_threads() == []


def test_ctrl_c_while_a_job_starts_stops_the_job_before_it_goes_on(
    client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Scope.run`` (a sync race, one result): a Ctrl-C that lands while the caller waits for
    the loop to start the job may come after the job started. It is cancelled, and waited
    for, before the ``KeyboardInterrupt`` goes on, not left running until the scope exits.
    Here the loop presses Ctrl-C as it starts the job."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")
    prepare = Job._prepare  # pyright: ignore[reportPrivateUsage]

    def prepare_and_press_ctrl_c(job: Job) -> None:
        prepare(job)
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGINT)  # the caller is waiting in the start

    monkeypatch.setattr(Job, "_prepare", prepare_and_press_ctrl_c)
    ended = threading.Event()

    async def job() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tether.sync.open_scope(client) as scope:
            with pytest.raises(KeyboardInterrupt):
                scope.run(job, "the job")
            assert ended.is_set()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert portal_threads() == []


# -------------------------------------------------------------------- race


def test_race_in_a_scope_runs_on_the_scope_portal(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.open_scope(client) as scope:
        result = tether.sync.race(
            scope, [{"model": "slow", "input": "hi"}, {"model": "fast", "input": "hi"}]
        )
        assert len(portal_threads()) == 1
    assert result.winner.index == 1


# ------------------------------------------------------------------ bad input


def test_open_scope_refuses_an_async_client_with_a_pointer_to_tether_open_scope(
    emulator: ResponsesEmulator,
) -> None:
    async_client = emulator.async_client()
    with pytest.raises(TypeError, match=r"use tether\.open_scope for the async client"):
        tether.sync.open_scope(async_client)  # type: ignore[arg-type]
    anyio.run(async_client.close)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"deadline": -1}, "deadline"),
        ({"grace": 0}, "grace"),
        ({"first_event_timeout": 0}, "first_event_timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_open_scope_rejects_bad_arguments_before_starting_anything(
    client: openai.OpenAI, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        tether.sync.open_scope(client, **kwargs)
    assert portal_threads() == []


def test_deadline_argument_with_a_scope_points_to_open_scope(client: openai.OpenAI) -> None:
    with tether.sync.open_scope(client) as scope:
        with pytest.raises(ValueError, match=r"pass it to tether\.sync\.open_scope\(\)"):
            tether.sync.guarded_stream(scope, model="fast", input="hi", deadline=5)


def test_scope_used_after_its_block_raises_runtime_error(client: openai.OpenAI) -> None:
    with tether.sync.open_scope(client) as scope:
        pass
    guarded = tether.sync.guarded_stream(scope, model="fast", input="hi")
    with pytest.raises(RuntimeError, match=r"this tether\.sync\.Scope has exited"):
        guarded.__enter__()
    with pytest.raises(RuntimeError, match="has exited"):
        scope.cancel()
