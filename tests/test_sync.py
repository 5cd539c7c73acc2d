"""tether.sync: the guarded stream for ``openai.OpenAI``, against the emulator's ledger.

The first part ports the behaviours of openai-python PR #2916's tests (``response_id``,
``cancel()``, the close guaranteed, a pool of one connection); the rest covers what the
sync facade adds: early exits, Ctrl-C, deadlines, threads. Tests synchronise on the ledger
(``wait_for_sync``) and on events, never on sleeps.
"""

from __future__ import annotations

import _thread
import contextlib
import inspect
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

import tether
import tether.sync
from tests import sync_fixtures
from tests._http import httpx2
from tests.support import (
    WATCHDOG,
    Boom,
    in_thread,
    portal_threads,
    read_deltas_sync,
    req,
    settled_sync,
    threads_left_running,
)
from tether._sync_buffer import READ_AHEAD
from tether._sync_client import async_twin
from tether._sync_session import StreamSession
from tether.testing import EmulatedModel

if TYPE_CHECKING:
    from collections.abc import Callable

    from tether.testing import ResponsesEmulator


portal_backend = sync_fixtures.portal_backend  # autouse: asyncio and trio
client = sync_fixtures.client


def once_generating(emulator: ResponsesEmulator, tokens: int = 2) -> Callable[[Any], bool]:
    """A ledger predicate: the first response has generated *tokens* tokens."""
    return lambda ledger: bool(ledger.responses) and ledger.responses[0].tokens_generated >= tokens


# ------------------------------------------------------- PR #2916: response_id


def test_response_id_is_none_before_entering_and_known_inside(client: openai.OpenAI) -> None:
    """The sync open waits for response.created: inside the block the id is always known."""
    guarded = tether.sync.guarded_stream(client, model="fast", input="hi")
    assert guarded.response_id is None
    with guarded as stream:
        assert stream.response_id is not None
        assert stream.response_id.startswith("resp_")
        first = next(stream)
        assert first.type == "response.created"
        assert first.response.id == stream.response_id
        stream.get_final_response()


# ------------------------------------------------------------ PR #2916: cancel()


def test_cancel_calls_the_endpoint_with_the_response_id(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 1)
        receipt = stream.cancel()
    assert receipt.response_id == stream.response_id
    assert receipt.kind == "server"
    assert receipt.status == "cancelled"
    assert emulator.ledger[stream.response_id].cancel_calls == 1
    assert stream.outcome.reason == "explicit"


def test_stream_is_closed_after_cancel(emulator: ResponsesEmulator, client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 1)
        stream.cancel()
        response_id = stream.response_id
        assert response_id is not None
        emulator.wait_for_sync(lambda ledger: ledger[response_id].listeners == 0)
    assert emulator.ledger[response_id].status == "cancelled"


def test_iteration_ends_after_cancel(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 1)
        stream.cancel()
        assert list(stream) == []


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace and the response runs on"
)
def test_stream_is_closed_even_when_the_cancel_hangs(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="hanging-cancel", input="hi", grace=0.2) as s:
        read_deltas_sync(s, 1)
        receipt = s.cancel()
        response_id = s.response_id
        assert response_id is not None
        emulator.wait_for_sync(lambda ledger: ledger[response_id].listeners == 0)
    assert receipt.status is None
    assert receipt.error is not None
    assert "grace" in receipt.error
    assert s.outcome.cleanup_error is not None


def test_failing_cancel_is_retried_then_confirmed(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="flaky-cancel", input="hi") as stream:
        read_deltas_sync(stream, 1)
        receipt = stream.cancel()
    assert receipt.status == "cancelled"
    assert receipt.attempts == 3
    assert emulator.ledger[stream.response_id].cancel_statuses == [500, 500, 200]


def test_cancel_twice_returns_the_same_receipt(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        first = stream.cancel()
        second = stream.cancel()
    assert first is second
    assert stream.cancel() is first  # after the block too
    assert emulator.ledger[stream.response_id].cancel_calls == 1


def test_cancel_after_completion_sends_nothing(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        stream.get_final_response()
        receipt = stream.cancel()
    assert receipt.kind == "none"
    assert receipt.status == "completed"
    assert emulator.ledger[stream.response_id].cancel_calls == 0


def test_cancel_before_entering_is_refused(client: openai.OpenAI) -> None:
    guarded = tether.sync.guarded_stream(client, model="fast", input="hi")
    with pytest.raises(RuntimeError, match="inside `with`"):
        guarded.cancel()


def test_pool_of_one_connection_does_not_deadlock(
    emulator: ResponsesEmulator,
) -> None:
    """The mirrored async client keeps max_connections=1; the stream is closed before the cancel."""
    paths: list[str] = []
    http = httpx2.Client(
        limits=httpx2.Limits(max_connections=1),
        event_hooks={"request": [lambda request: paths.append(request.url.path)]},
    )
    outcomes: list[tether.StreamOutcome] = []

    def scenario() -> None:
        with emulator.client(http_client=http) as client:
            with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
                read_deltas_sync(stream, 1)
            outcomes.append(stream.outcome)

    watchdog = in_thread(scenario)
    watchdog.join(WATCHDOG)
    assert not watchdog.is_alive(), "deadlocked on a pool of one connection"
    (outcome,) = outcomes
    assert outcome.receipt is not None
    assert outcome.receipt.status == "cancelled"
    assert paths == [
        "/v1/responses",
        f"/v1/responses/{outcome.response_id}/cancel",
        f"/v1/responses/{outcome.response_id}",  # the cancel read back (best effort)
    ]


# ------------------------------------------------------------------ finishing


def test_completed_stream_is_never_cancelled(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        for _ in stream:
            pass
    assert stream.outcome.reason == "completed"
    assert stream.outcome.receipt is None
    assert emulator.ledger[stream.response_id].cancel_calls == 0


def test_text_deltas_spell_the_final_text(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        text = "".join(stream.text_deltas())
        response = stream.get_final_response()
    assert text == response.output_text
    assert response.status == "completed"


def test_outcome_is_refused_until_the_block_exits(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        with pytest.raises(RuntimeError, match="exited"):
            _ = stream.outcome
        stream.get_final_response()
    assert stream.outcome.reason == "completed"


# ---------------------------------------------------------------- early exits


def test_break_cancels_the_response_on_the_server(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 3)
    assert settled_sync(emulator, stream.response_id).status == "cancelled"
    assert stream.outcome.reason == "break"


def test_exception_in_the_body_propagates_unchanged_and_cancels(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    boom = Boom("mine")
    with pytest.raises(Boom) as caught:
        with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
            read_deltas_sync(stream, 1)
            raise boom
    assert caught.value is boom
    assert stream.outcome.reason == "exception"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"


def press_ctrl_c_with_interrupt_main() -> None:
    _thread.interrupt_main()


def press_ctrl_c_with_a_real_signal() -> None:
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


@pytest.mark.parametrize(
    "press_ctrl_c",
    [
        press_ctrl_c_with_interrupt_main,
        pytest.param(
            press_ctrl_c_with_a_real_signal,
            marks=pytest.mark.skipif(sys.platform == "win32", reason="no pthread_kill"),
        ),
    ],
)
def test_ctrl_c_during_iteration_cancels_and_propagates(
    emulator: ResponsesEmulator, client: openai.OpenAI, press_ctrl_c: Callable[[], None]
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")

    def user() -> None:
        emulator.wait_for_sync(once_generating(emulator))
        press_ctrl_c()

    # Made before the block: Ctrl-C may land before start() has even returned.
    presser = threading.Thread(target=user)
    with pytest.raises(KeyboardInterrupt):
        with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
            presser.start()
            for _ in stream:  # the slow model streams for a minute: only Ctrl-C ends this
                pass
    presser.join()
    assert stream.outcome.reason == "interrupted"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"
    assert portal_threads() == []


CTRL_C = [
    press_ctrl_c_with_interrupt_main,
    pytest.param(
        press_ctrl_c_with_a_real_signal,
        marks=pytest.mark.skipif(sys.platform == "win32", reason="no pthread_kill"),
    ),
]


@pytest.mark.parametrize("press_ctrl_c", CTRL_C)
def test_ctrl_c_while_opening_cancels_once_the_id_is_known(
    emulator: ResponsesEmulator, client: openai.OpenAI, press_ctrl_c: Callable[[], None]
) -> None:
    """Ctrl-C before response.created: the open finishes under its shield, then cancels."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")
    delivered = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        delivered.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    body_ran = False
    try:
        with emulator.hold("created") as hold:

            def user() -> None:
                emulator.wait_for_sync(lambda ledger: len(ledger.responses) == 1)
                press_ctrl_c()
                delivered.wait(WATCHDOG)
                hold.release()  # only now does the server send response.created

            guarded = tether.sync.guarded_stream(client, model="slow", input="hi")
            presser = in_thread(user)
            with pytest.raises(KeyboardInterrupt):
                with guarded:
                    body_ran = True
            presser.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not body_ran
    assert guarded.outcome.reason == "interrupted"
    assert settled_sync(emulator, guarded.response_id).status == "cancelled"


@pytest.mark.skipif(sys.platform == "win32", reason="no pthread_kill")
def test_ctrl_c_while_the_session_starts_stops_the_session_it_started(
    emulator: ResponsesEmulator, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands while the caller still waits for the loop to start the session
    (under load, the request may be on its way by then): a CI run left the response
    generating and the portal thread running. Here the loop presses it as it starts."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")
    prepare = StreamSession._prepare  # pyright: ignore[reportPrivateUsage]

    def prepare_and_press_ctrl_c(session: StreamSession) -> None:
        prepare(session)
        press_ctrl_c_with_a_real_signal()  # the caller is waiting in the start right now

    monkeypatch.setattr(StreamSession, "_prepare", prepare_and_press_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    body_ran = False
    try:
        guarded = tether.sync.guarded_stream(client, model="slow", input="hi")
        with pytest.raises(KeyboardInterrupt), guarded:
            body_ran = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not body_ran
    assert guarded.outcome.reason == "interrupted"
    assert portal_threads() == []
    if guarded.response_id is not None:  # the request had left: cancelled, not orphaned
        assert settled_sync(emulator, guarded.response_id).status == "cancelled"


def test_deadline_during_iteration_raises_timeout_error_and_cancels(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded) as caught:
        with tether.sync.guarded_stream(client, model="slow", input="hi", deadline=1.0) as s:
            for _ in s:
                pass
    assert isinstance(caught.value, TimeoutError)
    assert s.outcome.reason == "deadline"
    assert settled_sync(emulator, s.response_id).status == "cancelled"


def test_deadline_cancels_on_the_server_while_the_body_is_busy(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """The body runs its own blocking code: the response is cancelled at the deadline anyway."""
    with pytest.raises(tether.DeadlineExceeded):
        with tether.sync.guarded_stream(client, model="slow", input="hi", deadline=1.0) as s:
            response_id = s.response_id
            assert response_id is not None
            emulator.wait_for_sync(lambda ledger: ledger[response_id].status == "cancelled")
    assert s.outcome.reason == "deadline"


def test_first_token_timeout_raises_stall_error_and_cancels(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(tether.StallError) as caught:
        with tether.sync.guarded_stream(
            client, model="silent", input="hi", first_token_timeout=0.2
        ) as stream:
            for _ in stream:
                pass
    assert caught.value.kind == "first_token"
    assert stream.outcome.reason == "stalled"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"


def test_error_event_raises_the_sdk_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError):
        with tether.sync.guarded_stream(client, model="nested-error", input="hi") as stream:
            for _ in stream:
                pass
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "failed"


def test_unknown_model_error_propagates_and_leaves_nothing(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError):
        with tether.sync.guarded_stream(client, model="no-such-model", input="hi"):
            pass
    assert emulator.ledger.orphans() == []
    assert portal_threads() == []


# -------------------------------------------------------------------- threads


def test_cancel_from_another_thread_ends_the_iteration(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    receipts: list[tether.CancelReceipt] = []
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:

        def stop_button() -> None:
            emulator.wait_for_sync(once_generating(emulator))
            receipts.append(stream.cancel())

        button = in_thread(stop_button)
        for _ in stream:  # ends when the other thread cancels
            pass
        button.join()
    assert receipts[0].status == "cancelled"
    assert stream.outcome.reason == "explicit"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"


def test_cancel_from_another_thread_while_opening_waits_for_the_id_then_cancels(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """Whether the cancel reaches the loop before or after response.created, nothing is orphaned."""
    guarded = tether.sync.guarded_stream(client, model="slow", input="hi")
    receipts: list[tether.CancelReceipt] = []
    with emulator.hold("created") as hold:

        def stop_button() -> None:
            emulator.wait_for_sync(lambda ledger: len(ledger.responses) == 1)  # no id yet
            pressed = in_thread(lambda: receipts.append(guarded.cancel()))
            hold.release()
            pressed.join()

        button = in_thread(stop_button)
        with guarded as stream:
            assert stream.response_id is not None
            button.join()
            assert [event.type for event in stream] in ([], ["response.created"])
    assert receipts[0].status == "cancelled"
    assert stream.outcome.reason == "explicit"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"


def test_stream_works_from_a_thread_that_is_not_the_main_one(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    outcomes: list[tether.StreamOutcome] = []

    def worker() -> None:
        with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
            read_deltas_sync(stream, 2)
        outcomes.append(stream.outcome)

    thread = in_thread(worker)
    thread.join(WATCHDOG)
    assert not thread.is_alive()
    (outcome,) = outcomes
    assert outcome.reason == "break"
    assert settled_sync(emulator, outcome.response_id).status == "cancelled"


@pytest.mark.parametrize("ending", ["completed", "break", "exception"])
def test_no_thread_is_left_running_after_exit(client: openai.OpenAI, ending: str) -> None:
    baseline = set(threading.enumerate())
    with pytest.raises(Boom) if ending == "exception" else contextlib.nullcontext():
        with tether.sync.guarded_stream(
            client, model="fast" if ending == "completed" else "slow", input="hi"
        ) as stream:
            assert len(portal_threads()) == 1
            if ending == "completed":
                stream.get_final_response()
            else:
                read_deltas_sync(stream, 1)
            if ending == "exception":
                raise Boom
    assert portal_threads() == []
    assert threads_left_running(baseline) == []


# ------------------------------------------------------------ detach, resume


def test_detach_then_resume_continues_after_the_handle(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 2)
        handle = stream.detach()
    assert stream.outcome.reason == "detached"
    assert emulator.ledger[handle.response_id].generating
    assert handle.last_sequence_number is not None
    with tether.sync.resume(client, handle) as resumed:
        first = next(resumed)
    assert first.sequence_number == handle.last_sequence_number + 1
    assert resumed.outcome.reason == "break"
    assert settled_sync(emulator, handle.response_id).status == "cancelled"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"model": "fast", "input": "hi", "stream": False}, ValueError, "stream"),
        ({"model": "fast", "input": "hi", "background": "yes"}, TypeError, "background"),
        ({"model": "fast", "input": "hi", "grace": 0}, ValueError, "grace"),
        ({"model": "fast", "input": "hi", "deadline": -5}, ValueError, "deadline"),
        ({"model": "fast", "input": "hi", "deadline": "5"}, TypeError, "deadline"),
        ({"model": "fast", "input": "hi", "idle_timeout": 0}, ValueError, "idle_timeout"),
        ({"model": "fast", "input": "hi", "first_token_timeout": -1}, ValueError, "first_token"),
        ({"input": "hi"}, TypeError, "model"),
    ],
)
def test_bad_arguments_are_rejected_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.OpenAI,
    kwargs: dict[str, Any],
    error: type[Exception],
    argument: str,
) -> None:
    with pytest.raises(error, match=argument):
        tether.sync.guarded_stream(client, **kwargs)
    assert emulator.ledger.requests == 0


def test_async_client_is_refused_with_a_pointer_to_tether_guarded_stream(
    emulator: ResponsesEmulator,
) -> None:
    async_client = emulator.async_client()
    with pytest.raises(TypeError, match=r"tether\.guarded_stream"):
        tether.sync.guarded_stream(async_client, model="fast", input="hi")  # type: ignore[arg-type]
    assert emulator.ledger.requests == 0
    anyio.run(async_client.close)


def test_entering_twice_is_refused(client: openai.OpenAI) -> None:
    guarded = tether.sync.guarded_stream(client, model="fast", input="hi")
    with guarded:
        guarded.get_final_response()
    with pytest.raises(RuntimeError, match="only once"):
        guarded.__enter__()


def test_async_client_message_names_what_was_passed_and_the_async_api(
    emulator: ResponsesEmulator,
) -> None:
    async_client = emulator.async_client()
    with pytest.raises(TypeError) as caught:
        tether.sync.guarded_stream(async_client, model="fast", input="hi")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("scope must be a tether.sync.Scope or an openai.OpenAI, got ")
    assert "AsyncOpenAI" in message
    assert "use tether.guarded_stream for the async client" in message
    anyio.run(async_client.close)


# ------------------------------------------------------------ after the block


@pytest.mark.parametrize("ending", ["completed", "break"])
def test_a_for_after_the_block_raises_runtime_error(client: openai.OpenAI, ending: str) -> None:
    model = "fast" if ending == "completed" else "slow"
    with tether.sync.guarded_stream(client, model=model, input="hi") as stream:
        if ending == "completed":
            stream.get_final_response()
        else:
            next(stream)
    with pytest.raises(RuntimeError, match=r"after its `with` block \(it ended: " + ending):
        iter(stream)


def test_next_after_the_block_raises_runtime_error_every_time(client: openai.OpenAI) -> None:
    """Events read ahead are not handed out after the block: next() says why instead."""
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        next(stream)
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"after its `with` block \(it ended: break\)"):
            next(stream)


def test_text_deltas_after_the_block_raises_runtime_error(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 1)
    with pytest.raises(RuntimeError, match=r"text_deltas\(\) on a stream after its `with` block"):
        stream.text_deltas()


def test_detach_after_the_block_raises_runtime_error(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        read_deltas_sync(stream, 1)
    with pytest.raises(RuntimeError, match=r"detach\(\) after the `with` block.*\(break\)"):
        stream.detach()


def test_a_second_for_after_the_end_raises_runtime_error(client: openai.OpenAI) -> None:
    """A stream is read once: a new loop over an ended stream is a bug, not an empty loop."""
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        for _ in stream:
            pass
        with pytest.raises(RuntimeError, match="already ended: its events are read once"):
            iter(stream)
        with pytest.raises(StopIteration):
            next(stream)  # the iterator protocol: once ended, next() keeps saying so
        assert stream.get_final_response().status == "completed"


def test_a_second_for_after_a_break_goes_on_where_the_first_stopped(client: openai.OpenAI) -> None:
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        first = next(iter(stream))
        second = next(iter(stream))
        assert second.sequence_number == first.sequence_number + 1
        stream.get_final_response()


def test_iterating_before_entering_raises_runtime_error(client: openai.OpenAI) -> None:
    guarded = tether.sync.guarded_stream(client, model="fast", input="hi")
    with pytest.raises(RuntimeError, match="needs its `with` block"):
        iter(guarded)


# ------------------------------------------------------------------ read-ahead


def test_read_ahead_is_bounded_and_loses_no_event(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """The loop reads at most READ_AHEAD events ahead of the caller; all arrive, in order."""
    emulator.models["bulk"] = EmulatedModel(ttft=0.0, tokens_per_s=1e9, length=2000)
    with tether.sync.guarded_stream(client, model="bulk", input="hi") as stream:
        response_id = stream.response_id
        assert response_id is not None
        emulator.wait_for_sync(lambda ledger: ledger[response_id].status == "completed")
        buffered: list[int] = []
        sequence: list[int] = []
        for event in stream:
            buffered.append(len(stream._buffer))
            sequence.append(event.sequence_number)
    assert max(buffered) <= READ_AHEAD
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    assert stream.outcome.reason == "completed"
    assert stream.outcome.events == len(sequence)


def test_detach_handle_counts_only_the_events_handed_to_the_caller(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """Events read ahead but never handed over are not skipped by a resume."""
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        last = next(stream)
        response_id = stream.response_id
        assert response_id is not None
        emulator.wait_for_sync(lambda ledger: ledger[response_id].tokens_generated >= 3)
        handle = stream.detach()
    assert handle.last_sequence_number == last.sequence_number
    with tether.sync.resume(client, handle) as resumed:
        assert next(resumed).sequence_number == last.sequence_number + 1
    assert settled_sync(emulator, response_id).status == "cancelled"


def test_a_stream_cancelled_while_queued_runs_its_body_without_id_or_events(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """As on the async stream: cancel() gives up the queued open, sending nothing, at once
    (it used to wait for the slot, then send the request and cancel it)."""
    seen: list[object] = []
    with tether.sync.open_scope(client, max_concurrency=1) as scope:
        limiter = scope.async_scope.limiter
        assert limiter is not None
        with tether.sync.guarded_stream(scope, model="slow", input="a") as first:
            next(first)
            queued = tether.sync.guarded_stream(scope, model="slow", input="b")

            def owner() -> None:
                with queued as stream:
                    seen.append(stream.response_id)
                    seen.extend(stream)

            thread = in_thread(owner)

            async def until_queued() -> None:
                with anyio.fail_after(WATCHDOG):
                    while limiter.statistics().tasks_waiting == 0:
                        await anyio.lowlevel.checkpoint()

            scope.run(until_queued, "the queue")
            receipt = queued.cancel()  # the slot is still held by `first`
            thread.join(WATCHDOG)
            assert not thread.is_alive()
    assert receipt.kind == "none"
    assert receipt.response_id is None
    assert seen == [None]
    assert len(emulator.ledger.responses) == 1
    assert queued.outcome.reason == "explicit"


def wait_read_to_the_end(stream: tether.sync.GuardedStream) -> None:
    """Block until the loop's reader has read the whole stream ahead of the caller.

    The reader has no event for it: a task on the loop checks after each turn of the loop
    (a checkpoint, not a sleep), under the watchdog.
    """
    guard = stream._guard

    async def until_read() -> None:
        with anyio.fail_after(WATCHDOG):
            while not guard.exhausted:
                await anyio.lowlevel.checkpoint()

    stream._scope.run(until_read, "the read-ahead")


def test_status_describes_the_events_handed_not_those_read_ahead(client: openai.OpenAI) -> None:
    """Regression test for issue 24 (2): the read-ahead buffer does not show through."""
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        wait_read_to_the_end(stream)  # the reader has seen response.completed
        first = next(stream)
        assert first.type == "response.created"
        assert first.response.status == "queued"
        assert stream.status == "queued"
        shown = "queued"
        for event in stream:
            if event.type in ("response.queued", "response.in_progress", "response.completed"):
                shown = event.response.status
            assert stream.status == shown, event.type
    assert stream.status == "completed"


def test_last_sequence_number_describes_the_events_handed(client: openai.OpenAI) -> None:
    """Before the first event, the response.created the open read (as on the async stream)."""
    with tether.sync.guarded_stream(client, model="fast", input="hi") as stream:
        wait_read_to_the_end(stream)
        assert stream.last_sequence_number == 0
        for event in stream:
            assert stream.last_sequence_number == event.sequence_number


def test_status_after_cancel_is_the_receipts_though_events_were_read_ahead(
    client: openai.OpenAI,
) -> None:
    """Once the stream ended for the caller, its status is what the stop learnt."""
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        next(stream)
        receipt = stream.cancel()
        assert stream.status == receipt.status == "cancelled"
        assert list(stream) == []
    assert stream.status == "cancelled"


# ---------------------------------------------------------------- public names


def test_dir_of_tether_sync_shows_only_the_public_names() -> None:
    assert dir(tether.sync) == sorted(tether.sync.__all__)
    assert tether.sync.open_scope is not tether.open_scope


# --------------------------------------------------- the async twin of a client


def test_async_twin_copies_the_client_settings(emulator: ResponsesEmulator) -> None:
    sync_client = openai.OpenAI(
        api_key="sk-settings",
        organization="org-1",
        project="proj-1",
        base_url=emulator.base_url,
        default_headers={"X-Trace": "t1"},
        default_query={"tenant": "a"},
        timeout=12.5,
        max_retries=7,
    )
    twin = async_twin(sync_client)
    assert isinstance(twin, openai.AsyncOpenAI)
    assert (twin.api_key, twin.organization, twin.project) == ("sk-settings", "org-1", "proj-1")
    assert twin.base_url == sync_client.base_url
    assert (twin.timeout, twin.max_retries) == (12.5, 7)
    assert twin.default_headers["X-Trace"] == "t1"
    assert twin.default_query == {"tenant": "a"}
    anyio.run(twin.close)
    sync_client.close()


def test_async_twin_of_azure_keeps_version_endpoint_and_deployment() -> None:
    sync_client = openai.AzureOpenAI(
        azure_ad_token_provider=lambda: "token",
        api_version="2025-04-01-preview",
        azure_endpoint="https://example.openai.azure.com",
        azure_deployment="dep",
    )
    twin: Any = async_twin(sync_client)
    assert isinstance(twin, openai.AsyncAzureOpenAI)
    assert twin.base_url == sync_client.base_url
    assert twin.default_query["api-version"] == "2025-04-01-preview"
    assert twin._azure_deployment == "dep"
    assert twin._azure_ad_token_provider is sync_client._azure_ad_token_provider
    anyio.run(twin.close)
    sync_client.close()


def test_custom_transport_needs_an_async_http_client(emulator: ResponsesEmulator) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(500))
    with emulator.client(http_client=httpx2.Client(transport=transport)) as sync_client:
        with pytest.raises(TypeError, match="async_http_client"):
            tether.sync.guarded_stream(sync_client, model="fast", input="hi")
    assert emulator.ledger.requests == 0


def test_async_http_client_carries_the_sync_credentials_and_is_closed(
    emulator: ResponsesEmulator,
) -> None:
    """A callable api_key, headers and organization reach the server through the twin."""
    seen: list[httpx2.Request] = []

    async def record(request: httpx2.Request) -> None:
        seen.append(request)

    http = httpx2.AsyncClient(event_hooks={"request": [record]})
    with emulator.client(
        api_key=lambda: "sk-from-a-callable",
        organization="org-1",
        default_headers={"X-Trace": "t1"},
    ) as sync_client:
        with tether.sync.guarded_stream(
            sync_client, model="fast", input="hi", async_http_client=http
        ) as stream:
            stream.get_final_response()
    assert http.is_closed
    headers = seen[0].headers
    assert headers["authorization"] == "Bearer sk-from-a-callable"
    assert headers["openai-organization"] == "org-1"
    assert headers["x-trace"] == "t1"


def test_http2_client_is_mirrored_with_http2_and_its_pool_limits() -> None:
    http = httpx2.Client(http2=True, limits=httpx2.Limits(max_connections=1))
    sync_client = openai.OpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1", http_client=http)
    twin: Any = async_twin(sync_client)
    pool = twin._client._transport._pool
    assert (pool._http1, pool._http2, pool._max_connections) == (True, True, 1)
    anyio.run(twin.close)
    sync_client.close()


def test_http2_only_client_is_mirrored_as_http2_only() -> None:
    """``http1=False, http2=True`` (h2c with prior knowledge) stays h2-only on the async side."""
    http = httpx2.Client(http1=False, http2=True)
    sync_client = openai.OpenAI(api_key="sk-x", base_url="http://127.0.0.1:9/v1", http_client=http)
    twin: Any = async_twin(sync_client)
    pool = twin._client._transport._pool
    assert (pool._http1, pool._http2) == (False, True)
    anyio.run(twin.close)
    sync_client.close()


def test_http2_client_streams_and_cancels_against_the_emulator(
    emulator: ResponsesEmulator,
) -> None:
    """Over cleartext, an ``http2=True`` client negotiates HTTP/1.1: the mirror must too."""
    with emulator.client(http_client=httpx2.Client(http2=True)) as sync_client:
        with tether.sync.guarded_stream(sync_client, model="slow", input="hi") as stream:
            read_deltas_sync(stream, 1)
    assert settled_sync(emulator, stream.response_id).status == "cancelled"


# ----------------------------------------------------------------------- race


def test_race_first_completed_wins_and_every_loser_is_cancelled_on_the_server(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    # Every request is sent before any attempt can win (else, on a busy machine, a slow
    # attempt whose request had not left yet has nothing to cancel).
    with emulator.hold("created") as created:

        def release_once_all_sent() -> None:
            emulator.wait_for_sync(lambda ledger: len(ledger.responses) == 3)
            created.release()

        releaser = threading.Thread(target=release_once_all_sent)
        releaser.start()
        result = tether.sync.race(client, [req("slow"), req("fast"), req("slow")])
        releaser.join()
    assert result.winner.index == 1
    assert result.winner.response is not None
    assert result.winner.response.status == "completed"
    assert [loser.index for loser in result.losers] == [0, 2]
    for loser in result.losers:
        assert loser.outcome is not None
        assert loser.outcome.reason == "race_lost"
        assert loser.receipt is not None
        assert loser.receipt.status == "cancelled"
    assert portal_threads() == []


def test_race_first_token_reads_the_winner_to_completion(client: openai.OpenAI) -> None:
    result = tether.sync.race(client, [req("silent"), req("fast")], win="first_token", grace=1)
    assert result.winner.index == 1
    assert result.winner.response is not None
    assert result.winner.response.status == "completed"


def test_race_across_sync_clients_carries_each_client_over(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with emulator.client(max_retries=0) as other:
        result = tether.sync.race(client, [req("slow"), req("fast", client=other)])
    assert result.winner.index == 1


def test_race_deadline_raises_timeout_error_after_cancelling_every_attempt(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    with pytest.raises(tether.DeadlineExceeded):
        tether.sync.race(client, [req("slow"), req("slow")], deadline=1.0)
    assert len(emulator.ledger.responses) == 2
    assert all(record.status == "cancelled" for record in emulator.ledger)


def test_race_ctrl_c_cancels_every_attempt_and_propagates(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")

    def user() -> None:
        emulator.wait_for_sync(
            lambda ledger: (
                len(ledger.responses) == 2
                and all(record.tokens_generated >= 1 for record in ledger)
            )
        )
        _thread.interrupt_main()

    presser = in_thread(user)
    with pytest.raises(KeyboardInterrupt):
        tether.sync.race(client, [req("slow"), req("slow")])
    presser.join()
    assert all(record.status == "cancelled" for record in emulator.ledger)
    assert portal_threads() == []


def test_race_with_every_attempt_failing_raises_race_failed(client: openai.OpenAI) -> None:
    with pytest.raises(tether.RaceFailed) as caught:
        tether.sync.race(client, [req("nested-error"), req("no-such-model")])
    assert len(caught.value.exceptions) == 2


@pytest.mark.parametrize(
    ("requests", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "requests"),
        ([req("fast")], {"stagger": -1}, ValueError, "stagger"),
        ([req("fast")], {"deadline": 0}, ValueError, "deadline"),
        ([req("fast")], {"max_concurrency": 0}, ValueError, "max_concurrency"),
        ([req("fast", stream=True)], {}, ValueError, "stream"),
        ("fast", {}, TypeError, "requests"),
    ],
)
def test_race_rejects_bad_arguments_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.OpenAI,
    requests: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        tether.sync.race(client, requests, **kwargs)
    assert emulator.ledger.requests == 0
    assert portal_threads() == []


def test_race_refuses_async_clients_with_a_pointer_to_tether_race(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    async_client = emulator.async_client()
    with pytest.raises(TypeError, match=r"tether\.race"):
        tether.sync.race(async_client, [req("fast")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"requests\[1\]\['client'\].*tether\.race"):
        tether.sync.race(client, [req("fast"), req("fast", client=async_client)])
    assert emulator.ledger.requests == 0
    anyio.run(async_client.close)


# -------------------------------------------------------------- public names


def test_public_names_belong_to_tether_sync_and_show_an_example() -> None:
    assert sorted(tether.sync.__all__) == tether.sync.__all__
    for name in tether.sync.__all__:
        member = getattr(tether.sync, name)
        assert member.__module__ == "tether.sync", name
        assert "Example" in (inspect.getdoc(member) or ""), name


def test_twin_of_an_sdk_default_client_shares_its_tls_context(emulator: ResponsesEmulator) -> None:
    """Building a TLS context is most of what a new client costs: the twin reuses the sync one's."""
    with emulator.client() as sync_client:
        twin: Any = async_twin(sync_client)
        sync_pool: Any = sync_client._client._transport._pool  # type: ignore[attr-defined]
        assert twin._client._transport._pool._ssl_context is sync_pool._ssl_context
        assert twin._client.timeout == sync_client._client.timeout
        anyio.run(twin.close)


def test_opening_a_stream_from_the_scopes_own_loop_thread_raises_instead_of_hanging(
    client: openai.OpenAI,
) -> None:
    """The loop runs a scope's calls as callbacks: one made from the loop's own thread (a
    coroutine given to ``scope.run``, an observer) would wait for itself."""
    raised: list[BaseException] = []
    with tether.sync.open_scope(client) as scope:

        async def on_the_loop() -> None:
            try:
                tether.sync.guarded_stream(scope, model="fast", input="hi").__enter__()
            except RuntimeError as exc:
                raised.append(exc)

        scope.run(on_the_loop, "a stream opened on the loop")
    assert len(raised) == 1
    assert "own event loop's thread" in str(raised[0])
