"""The promise under what anyio's shields cannot stop: native asyncio cancellation and Ctrl-C.

The asyncio tests use asyncio's own APIs (``asyncio.timeout``, ``TaskGroup``, ``Task.cancel``)
and run on asyncio only; the Ctrl-C tests send a real SIGINT to a child process on both
backends. Synchronised with the emulator's holds and ledger, never with sleeps.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from exceptiongroup import ExceptionGroup

import tether
from tests.conftest import requests_in_flight
from tests.support import WATCHDOG
from tests.test_guard import read_deltas, settled
from tether._cancel import cancel_slots
from tether._compat import OPENAI_MAJOR
from tether.testing import ResponsesEmulator

CHILD = Path(__file__).with_name("interrupt_child.py")
ROOT = Path(__file__).parents[1]
# This checkout's tether first (not whichever one is installed), then the tests package.
CHILD_START = 60.0  # seconds a child may take to send its first request (a bound, not a measure)
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.timeout, TaskGroup and cancelling() are 3.11+"
)
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def until_cancel_requested(task: asyncio.Task[Any]) -> None:
    """Yield to the loop until a native cancellation of *task* has been requested (nothing
    signals it: ``Task.cancelling()`` is a counter), bounded like every other wait here."""
    with anyio.fail_after(WATCHDOG):
        while task.cancelling() == 0:
            await asyncio.sleep(0)


@needs_311
@asyncio_only
async def test_asyncio_timeout_while_opening_cancels_on_the_server_and_raises_timeout_error(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    guarded = tether.guarded_stream(client, model="slow", input="hi")
    body_ran = False
    timeouts: list[asyncio.Timeout] = []
    tasks: list[asyncio.Task[Any]] = []
    raised: list[BaseException] = []

    async def opener() -> None:
        nonlocal body_ran
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                async with guarded:
                    body_ran = True
        except BaseException as exc:
            raised.append(exc)

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
            await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
            timeouts[0].reschedule(asyncio.get_running_loop().time())  # fires now, natively
            await until_cancel_requested(tasks[0])
            hold.release()
    assert not body_ran
    assert [type(exc) for exc in raised] == [TimeoutError]
    assert tasks[0].cancelling() == 0  # asyncio.timeout took its cancel request back
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"
    assert guarded.outcome.receipt is not None
    assert guarded.outcome.receipt.status == "cancelled"


@needs_311
@asyncio_only
async def test_asyncio_timeout_during_cleanup_lets_the_cancel_retries_finish(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    timeouts: list[asyncio.Timeout] = []
    tasks: list[asyncio.Task[Any]] = []
    raised: list[BaseException] = []
    streams: list[tether.GuardedStream] = []

    async def reader() -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                async with tether.guarded_stream(client, model="flaky-cancel", input="hi") as s:
                    streams.append(s)
                    await read_deltas(s, 1)
        except BaseException as exc:
            raised.append(exc)

    with emulator.hold("cancel") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
            timeouts[0].reschedule(asyncio.get_running_loop().time())  # mid-cleanup
            await until_cancel_requested(tasks[0])
            hold.release()
    (stream,) = streams
    assert [type(exc) for exc in raised] == [TimeoutError]
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"
    assert stream.outcome.receipt.attempts == 3  # two 500s, then the cancel: none cut off


@needs_311
@asyncio_only
async def test_task_group_sibling_failure_while_opening_cancels_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    guarded = tether.guarded_stream(client, model="slow", input="hi")

    class SiblingFailed(Exception):
        pass

    async def opener() -> None:
        async with guarded:
            pytest.fail("the body must not run")

    async def sibling(hold: Any) -> None:
        await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
        asyncio.get_running_loop().call_soon(hold.release)  # after the cancel is requested
        raise SiblingFailed

    with emulator.hold("created") as hold, pytest.raises(ExceptionGroup) as caught:
        async with asyncio.TaskGroup() as group:
            group.create_task(opener())
            group.create_task(sibling(hold))
    assert [type(exc) for exc in caught.value.exceptions] == [SiblingFailed]
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"


@needs_311
@asyncio_only
async def test_task_cancel_while_opening_cancels_on_the_server_and_the_task_ends_cancelled(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    guarded = tether.guarded_stream(client, model="slow", input="hi")

    async def opener() -> None:
        async with guarded:
            pytest.fail("the body must not run")

    with emulator.hold("created") as hold:
        task = asyncio.get_running_loop().create_task(opener())
        await emulator.wait_for(lambda ledger: len(ledger.responses) == 1)
        task.cancel()
        await until_cancel_requested(task)
        hold.release()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert (await settled(emulator, guarded.response_id)).status == "cancelled"
    assert guarded.outcome.reason == "scope_cancelled"


@needs_311
@asyncio_only
async def test_asyncio_timeout_while_a_stop_waits_for_a_cancel_slot_still_sends_the_cancel(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether._cancel._IN_FLIGHT", 1)
    timeouts: list[asyncio.Timeout] = []
    tasks: list[asyncio.Task[Any]] = []
    raised: list[BaseException] = []
    streams: list[tether.GuardedStream] = []

    async def first() -> None:  # takes the only slot: its cancel is held by the emulator
        async with tether.guarded_stream(client, model="slow", input="hi") as stream:
            await read_deltas(stream, 1)

    async def queued() -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                async with tether.guarded_stream(client, model="slow", input="hi") as stream:
                    streams.append(stream)
                    await read_deltas(stream, 1)
                    await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
        except BaseException as exc:
            raised.append(exc)

    with emulator.hold("cancel") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(queued)
            await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == 1)
            # The second stop queues for the slot once its stream has read its delta (not
            # yet, on a busy machine, when every task is merely blocked): yield until then.
            slots = cancel_slots(client)
            with anyio.fail_after(10):
                while slots.statistics().tasks_waiting == 0:
                    await asyncio.sleep(0)
            assert slots.statistics().tasks_waiting == 1
            timeouts[0].reschedule(asyncio.get_running_loop().time())  # fires now, natively
            await until_cancel_requested(tasks[0])
            hold.release()
    (stream,) = streams
    assert [type(exc) for exc in raised] == [TimeoutError]
    assert tasks[0].cancelling() == 0  # asyncio.timeout took its cancel request back
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"
    assert (await settled(emulator, stream.response_id)).status == "cancelled"


@needs_311
@asyncio_only
async def test_asyncio_timeout_landing_inside_the_http_close_leaves_no_connection_checked_out(
    client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore marks a response closed before its cleanup awaits, and anyio's shield there
    does not stop a native cancellation (encode/httpcore#1115): landing inside, it left the
    request in the pool for good. The stop finishes that close."""
    core = importlib.import_module("httpcore2" if OPENAI_MAJOR >= 3 else "httpcore")
    connection_class: Any = core._async.http11.AsyncHTTP11Connection
    response_closed = connection_class._response_closed
    timeouts: list[asyncio.Timeout] = []

    async def interrupted(connection: Any) -> None:
        if timeouts:  # the stream's own close, in the reader's task: the timeout fires now,
            timeouts.pop().reschedule(asyncio.get_running_loop().time())  # at its next await:
            # the close's lock (httpcore 1.x awaits it even when free; httpcore2 awaits only
            # when the close also shuts the connection)
            await anyio.lowlevel.checkpoint()
        await response_closed(connection)

    monkeypatch.setattr(connection_class, "_response_closed", interrupted)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as timeout:
            async with tether.guarded_stream(client, model="fast", input="hi") as stream:
                timeouts.append(timeout)
                async for _ in stream:  # the body ends in this task: httpcore closes it here
                    pass
    assert not timeouts  # the close ran in the reader's task, and the timeout fired in it
    assert requests_in_flight(client) == 0


# --------------------------------------------------------------------- Ctrl-C while opening


def interrupt_child(
    emulator: ResponsesEmulator,
    backend: str,
    mode: str,
    hold: Any,
    ready: Callable[[subprocess.Popen[str]], None],
    reached: str,
) -> str:
    """Run ``interrupt_child.py`` in *mode*; once *ready* returns, send it a real SIGINT; once
    its log says *reached* (the interruption reached tether), release *hold*. Returns the
    rest of its stderr, once it has exited."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), emulator.base_url, backend, mode],
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        assert child.stderr is not None
        ready(child)
        child.send_signal(signal.SIGINT)
        for line in child.stderr:
            if reached in line:
                break
        hold.release()
        _, rest = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    return rest


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_while_opening_cancels_the_response_then_raises_keyboard_interrupt(
    emulator: ResponsesEmulator, backend: str
) -> None:
    """A real SIGINT while waiting for ``response.created``: the id is awaited, the response
    cancelled on the server, then KeyboardInterrupt goes on (the process exits with it)."""
    if backend == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio turns SIGINT into a cancellation only from Python 3.11")

    def opening(_: subprocess.Popen[str]) -> None:
        # a child process starting on a loaded machine: seconds just to import
        emulator.wait_for_sync(lambda ledger: len(ledger.responses) == 1, timeout=CHILD_START)

    with emulator.hold("created") as hold:
        rest = interrupt_child(
            emulator, backend, "open", hold, opening, reached="finishing the open first"
        )
    assert "KeyboardInterrupt" in rest
    (record,) = emulator.ledger.responses
    emulator.wait_for_sync(lambda ledger: not ledger[record.id].generating)
    assert emulator.ledger[record.id].status == "cancelled"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_while_a_stop_waits_for_a_cancel_slot_sends_the_cancel_then_raises_keyboard_interrupt(
    emulator: ResponsesEmulator, backend: str
) -> None:
    """A real SIGINT while a stop waits in its own task for a cancel slot (no child task):
    the wait goes on, the cancel is sent once the slot frees, then KeyboardInterrupt."""
    if backend == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio turns SIGINT into a cancellation only from Python 3.11")

    def queued(child: subprocess.Popen[str]) -> None:
        assert child.stderr is not None
        for line in child.stderr:  # the child says when its stop waits for the slot
            if line.strip() == "queued":
                break

    with emulator.hold("cancel") as hold:
        rest = interrupt_child(
            emulator, backend, "queued", hold, queued, reached="waiting on to cancel first"
        )
    assert "KeyboardInterrupt" in rest
    assert len(emulator.ledger.responses) == 2
    for record in emulator.ledger.responses:
        emulator.wait_for_sync(lambda ledger, id=record.id: not ledger[id].generating)
        assert emulator.ledger[record.id].status == "cancelled"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_landing_in_a_finalizer_still_cancels_the_scope_then_raises_keyboard_interrupt(
    emulator: ResponsesEmulator, backend: str, tmp_path: Path
) -> None:
    """A SIGINT handled inside a weakref callback (trio raises KeyboardInterrupt right there,
    and the interpreter ignores it) is not lost: the scope on its journal stops its stream,
    the response is cancelled on the server, and the process ends with KeyboardInterrupt."""
    if backend == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio turns SIGINT into a cancellation only from Python 3.11")
    child = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            emulator.base_url,
            backend,
            "finalizer",
            str(tmp_path / "journal.db"),
        ],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=60,
    )
    assert "SURVIVED" not in child.stdout  # it read on: Ctrl-C was lost
    assert child.returncode == -signal.SIGINT, child.stderr[-2000:]
    assert child.stderr.rstrip().endswith("KeyboardInterrupt")
    (record,) = emulator.ledger.responses
    emulator.wait_for_sync(lambda ledger: not ledger[record.id].generating)
    assert emulator.ledger[record.id].status == "cancelled"
    assert emulator.ledger.orphans() == []


async def test_overlapping_scopes_keep_sigint_until_the_last_one_closes(
    client: openai.AsyncOpenAI, anyio_backend: str
) -> None:
    """On trio, the first scope in takes SIGINT and the last one out gives it back, whatever
    the order they close in; on asyncio (whose runner owns Ctrl-C) nothing changes."""
    before = signal.getsignal(signal.SIGINT)
    first_open, second_open, first_closed = anyio.Event(), anyio.Event(), anyio.Event()
    seen: list[object] = []

    async def first() -> None:
        async with tether.open_scope(client):
            seen.append(signal.getsignal(signal.SIGINT))
            first_open.set()
            await second_open.wait()
        first_closed.set()  # closed before the second one

    async def second() -> None:
        await first_open.wait()
        async with tether.open_scope(client):
            second_open.set()
            await first_closed.wait()
            seen.append(signal.getsignal(signal.SIGINT))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
    assert seen[0] is seen[1]
    assert (seen[0] is not before) == (anyio_backend == "trio")
    assert signal.getsignal(signal.SIGINT) is before
