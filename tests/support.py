"""Helpers shared by the test modules: written once here, imported as ``from tests.support``.

Fixtures live in ``conftest.py`` (the emulator, its client, and their teardown checks:
no response left generating, no connection left checked out).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from tether._sync_portal import PORTAL_THREAD_NAME

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    import openai

    import tether
    import tether.journal
    import tether.sync
    from tether.testing import Ledger, ResponsesEmulator

WATCHDOG = 10.0
"""Seconds a "does not hang" scenario may take before the test calls it a hang."""

T = TypeVar("T")
POLL = 0.05
"""Seconds between two looks at a real server that has no change feed (see ``until``)."""


async def until(predicate: Callable[[], Awaitable[T]], what: str, timeout: float = 20.0) -> T:
    """Poll *predicate* until it returns something true, and return that; bounded.

    Only for what nothing can signal: a store's own clock (a lease's TTL in Redis,
    PostgreSQL or SQLite), Temporal's ``describe()``. Everything tether or the emulator
    can signal is waited for with an event or ``emulator.wait_for``. This and its sync
    twin, ``until_sync``, are the suite's polling sleeps outside virtual time.
    """
    try:
        with anyio.fail_after(timeout):
            while not (value := await predicate()):
                await anyio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout} s") from None
    return value


def until_sync(predicate: Callable[[], bool], what: str, timeout: float = WATCHDOG) -> None:
    """``until`` for a blocking caller: only for what nothing can signal (another thread's
    state, read off its frames)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(POLL)


async def lease_ran_out(
    journal: tether.journal.Journal, response_ids: Collection[str] | None = None
) -> None:
    """Until no entry (of *response_ids*, or at all) is alive: a dead owner's lease runs out
    on the store's clock."""

    async def none_alive() -> bool:
        entries = await journal.entries()
        return not any(
            e.alive for e in entries if response_ids is None or e.response_id in response_ids
        )

    await until(none_alive, "the dead owner's lease running out", timeout=30.0)


class Boom(Exception):
    """The user's own exception (raised by a test's body, tool or callback)."""


def req(model: str, **extra: Any) -> dict[str, Any]:
    """One request's create-kwargs for a race: *model*, the input ``"hi"``, and *extra*."""
    return {"model": model, "input": "hi", **extra}


# ------------------------------------------------------------------ reading


async def read_deltas(stream: tether.GuardedStream, n: int) -> None:
    """Read until *n* output deltas arrived (nothing at all for ``n=0``)."""
    seen = 0
    if n <= 0:
        return
    async for event in stream:
        if event.type == "response.output_text.delta":
            seen += 1
            if seen >= n:
                return


def read_deltas_sync(stream: tether.sync.GuardedStream, n: int) -> None:
    """`read_deltas` for a ``tether.sync`` stream."""
    seen = 0
    if n <= 0:
        return
    for event in stream:
        if event.type == "response.output_text.delta":
            seen += 1
            if seen >= n:
                return


# ------------------------------------------------------------------ the server side


async def settled(emulator: ResponsesEmulator, response_id: str | None) -> Ledger.Record:
    """Wait until the emulator stopped generating *response_id*, and return its record."""
    assert response_id is not None
    await emulator.wait_for(lambda ledger: not ledger[response_id].generating)
    return emulator.ledger[response_id]


def settled_sync(emulator: ResponsesEmulator, response_id: str | None) -> Ledger.Record:
    """`settled` for synchronous tests (blocks the calling thread)."""
    assert response_id is not None
    emulator.wait_for_sync(lambda ledger: not ledger[response_id].generating)
    return emulator.ledger[response_id]


def no_orphans(emulator: ResponsesEmulator) -> None:
    """Assert that, at this moment, the emulator generates no response (an orphan or not).

    The ``emulator`` fixture checks as much at teardown, after a bounded wait for what is
    settling; this is for a test whose point is that nothing is left *now*.
    """
    assert emulator.ledger.orphans() == []
    assert [record.id for record in emulator.ledger if record.generating] == []


def requests_in_flight(client: openai.AsyncOpenAI) -> int:
    """Requests holding a connection of the client's pool (httpcore's own book-keeping)."""
    pool = client._client._transport._pool  # type: ignore[attr-defined]
    return len(pool._requests)


# ------------------------------------------------------------------ threads (tether.sync)


def portal_threads() -> list[threading.Thread]:
    """The live threads of ``tether.sync``'s portals."""
    return [t for t in threading.enumerate() if t.name == PORTAL_THREAD_NAME]


def threads_left_running(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads started since *before* that are still running once each was given
    `WATCHDOG` seconds to end: a thread on its way out (an executor's worker joined at the
    loop's close) is waited for, not counted; a thread left running is.

    Not counted: trio's thread cache (``Trio thread N``), which keeps an idle worker for 10 s
    by design (``trio._core._thread_cache.IDLE_TIMEOUT``) and reuses it across runs.
    """
    new = [
        t
        for t in set(threading.enumerate()) - before
        if t is not threading.current_thread() and not t.name.startswith("Trio thread")
    ]
    for thread in new:
        thread.join(WATCHDOG)
    return [t for t in new if t.is_alive()]


def in_thread(target: Callable[[], object]) -> threading.Thread:
    """Start *target* in a thread (joined by the test: nothing here is detached)."""
    thread = threading.Thread(target=target)
    thread.start()
    return thread
