"""tether.sync when another thread raises an exception into the one that streams.

Temporal cancels a sync activity (a plain ``def``, run in the worker's thread pool) that
way: ``PyThreadState_SetAsyncExc`` raises its ``CancelledError`` into the activity's thread,
where it lands at whatever Python code runs there next, a wait on the portal's loop included.
These tests raise an exception of their own the same way (``tests/test_temporal.py`` has
the real activity on a real Temporal server). Synchronised on the ledger, on holds and on
the waiting thread's frames, never on sleeps.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import TYPE_CHECKING

import pytest
from anyio.from_thread import BlockingPortal

import tether.sync
from tests import sync_fixtures
from tests.support import WATCHDOG, portal_threads, read_deltas_sync, settled_sync, until_sync
from tether import _sync_portal

if TYPE_CHECKING:
    from collections.abc import Callable

    import openai

    from tether.testing import ResponsesEmulator


class Raised(Exception):
    """What the tests raise into the streaming thread (Temporal raises its CancelledError)."""


portal_backend = sync_fixtures.portal_backend  # autouse: asyncio and trio
client = sync_fixtures.client


def raise_into(thread: threading.Thread) -> None:
    """Raise ``Raised`` in *thread*, as Temporal raises its cancel into a sync activity."""
    assert thread.ident is not None
    raised = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(Raised)
    )
    assert raised == 1


def holds_it(thread: threading.Thread) -> bool:
    """Whether *thread* waits on the loop with a ``Raised`` held (``_sync_portal``'s
    ``deferred``), to raise once what it waits for is done."""
    frame = sys._current_frames().get(thread.ident or 0)  # pyright: ignore[reportPrivateUsage]
    while frame is not None:
        if frame.f_code.co_filename == _sync_portal.__file__ and isinstance(
            frame.f_locals.get("deferred"), Raised
        ):
            return True
        frame = frame.f_back
    return False


def run_in_thread(body: Callable[[], None]) -> tuple[threading.Thread, dict[str, object]]:
    """Run *body* in a worker thread; the dict gets what it raised (``"raised"``)."""
    result: dict[str, object] = {}

    def main() -> None:
        try:
            body()
        except BaseException as exc:
            result["raised"] = exc

    thread = threading.Thread(target=main)
    thread.start()
    return thread, result


def test_an_exception_raised_into_the_thread_while_it_reads_cancels_and_goes_on(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    streams: list[tether.sync.GuardedStream] = []
    reading = threading.Event()

    def body() -> None:
        with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
            streams.append(stream)
            reading.set()
            for _ in stream:  # the slow model streams for a minute: only the raise ends this
                pass

    thread, result = run_in_thread(body)
    assert reading.wait(WATCHDOG)
    raise_into(thread)
    thread.join(WATCHDOG)
    assert isinstance(result["raised"], Raised)
    [stream] = streams
    assert stream.outcome.reason == "exception"
    assert settled_sync(emulator, stream.response_id).status == "cancelled"
    assert portal_threads() == []


def test_an_exception_raised_into_the_thread_while_the_exit_waits_for_the_cancel_waits_for_it(
    emulator: ResponsesEmulator, client: openai.OpenAI
) -> None:
    """The block was left (a ``break``); its exit waits for the server's cancel; the raise
    lands there: it is held until the cancel is done (bounded by grace), then goes on."""
    seen: dict[str, str] = {}

    def body() -> None:
        with tether.sync.open_scope(client, grace=WATCHDOG) as scope:
            guarded = tether.sync.guarded_stream(scope, model="slow", input="hi")
            try:
                with guarded as stream:
                    read_deltas_sync(stream, 2)
            finally:  # the raise went on from the block: how far had the stop gone?
                assert guarded.response_id is not None
                seen["status"] = emulator.ledger[guarded.response_id].status
                seen["reason"] = guarded.outcome.reason

    with emulator.hold("cancel") as hold:
        thread, result = run_in_thread(body)
        emulator.wait_for_sync(lambda ledger: ledger.cancels_in_flight == 1)
        raise_into(thread)
        until_sync(lambda: holds_it(thread), "the exit to hold the raise")
        hold.release()
        thread.join(WATCHDOG)
    assert isinstance(result["raised"], Raised)
    assert seen == {"status": "cancelled", "reason": "break"}
    assert portal_threads() == []


def test_an_exception_raised_into_the_thread_while_its_portal_starts_stops_the_portal(
    emulator: ResponsesEmulator, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare client's block starts a portal (an event loop in a thread) first. A raise that
    lands while the caller waits for it to start used to hang the caller for good: anyio's
    ``start_blocking_portal`` joined the portal's thread, which nothing had stopped."""
    callers: list[threading.Thread] = []

    class RaisedIntoWhileStarting(BlockingPortal):
        async def __aenter__(self) -> BlockingPortal:
            [caller] = callers
            raise_into(caller)
            until_sync(lambda: holds_it(caller), "the start to hold the raise")
            return await super().__aenter__()

    monkeypatch.setattr(_sync_portal, "BlockingPortal", RaisedIntoWhileStarting)
    go = threading.Event()

    def body() -> None:
        go.wait(WATCHDOG)
        with tether.sync.guarded_stream(client, model="slow", input="hi"):
            pass  # pragma: no cover - the raise ends the entry

    thread, result = run_in_thread(body)
    callers.append(thread)
    go.set()
    thread.join(WATCHDOG)
    assert not thread.is_alive()
    assert isinstance(result["raised"], Raised)
    assert emulator.ledger.requests == 0
    assert portal_threads() == []
