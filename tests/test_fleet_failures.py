"""The store's failures: down at open, restarted mid-run, frozen on the stop path (real servers)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import anyio
import openai
import pytest

import tether
from tests.fleet_servers import PostgresServer, RedisServer, free_port, frozen
from tests.test_fleet import wait_for_entries
from tether.testing import ResponsesEmulator


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
async def test_a_scope_on_a_store_that_is_down_fails_at_open_naming_the_url(
    scheme: str, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    url = f"{scheme}://app:pw-secret-9@127.0.0.1:{free_port()}/0"
    with pytest.raises(tether.JournalError) as caught:
        async with tether.open_scope(client, journal=url):
            raise AssertionError("the body must not run")
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}" in str(caught.value)
    assert "pw-secret-9" not in str(caught.value)
    assert emulator.ledger.requests == 0


async def test_a_redis_restart_mid_run_keeps_the_entries_and_the_listener_comes_back(
    redis_server: RedisServer, redis_url: str, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(redis_url, lease=5.0)
    opened = anyio.Event()
    async with tether.open_scope(client, journal=journal) as scope:
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                async with tether.guarded_stream(scope, model="slow", input="hi", key="k") as s:
                    opened.set()
                    async for _ in s:
                        pass

            tg.start_soon(read)
            await opened.wait()
            await anyio.to_thread.run_sync(redis_server.stop)
            await anyio.to_thread.run_sync(redis_server.start)
            (entry,) = await journal.entries()  # written before the restart: still there
            assert entry.key == "k"
            # A request published while the listener reconnects is lost (documented): ask
            # again until the owner confirms, bounded.
            with anyio.fail_after(30):
                while not (await tether.request_cancel(redis_url, key="k", wait=1.0)).stopped:
                    pass
    journal.close()
    (outcome,) = scope.outcomes
    assert outcome.reason == "cancel_requested"


async def test_a_frozen_redis_does_not_hold_the_stop_path(
    redis_server: RedisServer, redis_url: str, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(redis_url, lease=5.0, timeout=0.2)
    assert redis_server.process is not None
    with anyio.move_on_after(20) as watchdog:
        async with tether.open_scope(client, journal=journal) as scope:
            async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
                redis_server.process.send_signal(signal.SIGSTOP)
            # the stop path ran: cancelled on the server, its journal call failed in time
    redis_server.process.send_signal(signal.SIGCONT)
    journal.close()
    assert not watchdog.cancel_called
    assert stream.outcome.receipt is not None
    assert stream.outcome.receipt.status == "cancelled"
    # the journal's failure is reported on the outcome, never raised into the code
    assert "TimeoutError" in (stream.outcome.cleanup_error or "")
    assert stream.outcome.reason == "break"


async def leave_a_stream_with_the_store_frozen(
    server: RedisServer | PostgresServer,
    journal: tether.journal.Journal,
    client: openai.AsyncOpenAI,
) -> tether.StreamOutcome:
    """Open a background stream, freeze the store, leave the block and the scope; thaw after.

    The journal's own timeout is 30 s a call: without a bound of grace's, leaving takes that
    long at least (PostgreSQL: until the server comes back). ``fail_after(10)`` is generous
    next to a grace of 0.5 s, and well below the stall.
    """
    with contextlib.ExitStack() as thaw:
        with anyio.fail_after(10):
            async with tether.open_scope(client, journal=journal, grace=0.5) as scope:
                async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
                    thaw.enter_context(frozen(server, at_most=20))
    return stream.outcome


async def test_a_frozen_redis_holds_neither_the_stop_nor_the_scope_exit_past_grace(
    redis_server: RedisServer,
    redis_url: str,
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
) -> None:
    """Issue 24, item 10: the removal, the heartbeat and the lease's drop are cut at grace."""
    journal = tether.open_journal(redis_url, lease=1.5, timeout=30.0)
    try:
        outcome = await leave_a_stream_with_the_store_frozen(redis_server, journal, client)
    finally:
        journal.close()
    assert outcome.receipt is not None
    assert outcome.receipt.status == "cancelled"  # the API cancel went out all the same
    assert emulator.ledger[outcome.response_id or ""].status == "cancelled"
    assert "no answer within grace" in (outcome.cleanup_error or "")


async def test_a_frozen_postgres_holds_neither_the_stop_nor_the_scope_exit_past_grace(
    postgres_server: PostgresServer,
    postgres_url: str,
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
) -> None:
    """Issue 24, item 10: libpq has no client-side timeout; grace bounds every journal call."""
    journal = tether.open_journal(postgres_url, lease=1.5, timeout=30.0)
    try:
        outcome = await leave_a_stream_with_the_store_frozen(postgres_server, journal, client)
    finally:
        journal.close()
    assert outcome.receipt is not None
    assert outcome.receipt.status == "cancelled"
    assert emulator.ledger[outcome.response_id or ""].status == "cancelled"
    assert "no answer within grace" in (outcome.cleanup_error or "")


class _NeverAnswers:
    """A journal whose removals never answer (a store that accepts and stalls); the rest is
    the SQLite journal it wraps."""

    def __init__(self, inner: tether.journal.Journal) -> None:
        self._inner = inner

    # Each member on the class itself: from Python 3.12, isinstance() with a Protocol looks
    # members up statically (inspect.getattr_static), never through __getattr__.
    lease = property(lambda self: self._inner.lease)
    owner = property(lambda self: self._inner.owner)
    intend = property(lambda self: self._inner.intend)
    started = property(lambda self: self._inner.started)
    entries = property(lambda self: self._inner.entries)
    attach = property(lambda self: self._inner.attach)
    check = property(lambda self: self._inner.check)
    claim = property(lambda self: self._inner.claim)
    release = property(lambda self: self._inner.release)
    request = property(lambda self: self._inner.request)

    async def finished(self, intent: str) -> None:
        await anyio.sleep_forever()


async def test_a_journal_removal_cut_at_grace_is_reported_on_the_outcome_and_logged(
    tmp_path: Path, client: openai.AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24, item 4: the cut shared its deadline with the stop's shield and went unseen."""
    inner = tether.open_journal(tmp_path / "j.sqlite3")
    journal = _NeverAnswers(inner)
    with anyio.fail_after(10):
        async with tether.open_scope(client, journal=journal, grace=0.3) as scope:
            async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
                pass
    error = stream.outcome.cleanup_error or ""
    assert "no answer within grace" in error
    assert "it stays for reap" in error
    assert [e.response_id for e in await inner.entries()] == [stream.response_id]
    assert any("no answer within grace" in r.getMessage() for r in caplog.records)


async def test_a_redis_restart_without_persistence_loses_no_entry_of_a_live_owner(
    redis_server: RedisServer, redis_url: str, client: openai.AsyncOpenAI
) -> None:
    """Issue 24, item 9: the owner writes again what the restart lost, on its next heartbeat,
    so that ``reap`` (once the owner is gone) and ``request_cancel`` still find it."""
    journal = tether.open_journal(redis_url, lease=1.5)
    try:
        async with tether.open_scope(client, journal=journal) as scope:
            async with tether.guarded_stream(scope, model="slow", input="hi", key="k") as stream:
                (written,) = await journal.entries()
                await anyio.to_thread.run_sync(redis_server.restart_empty)
                found = await wait_for_entries(journal)  # the next heartbeats write it again
                assert found == [written]
                assert found[0].response_id == stream.response_id
    finally:
        journal.close()


async def test_journals_opened_with_different_prefixes_share_a_redis_without_seeing_each_other(
    redis_url: str, client: openai.AsyncOpenAI
) -> None:
    mine = tether.open_journal(redis_url, prefix="app-a:")
    theirs = tether.open_journal(redis_url, prefix="app-b:")
    async with tether.open_scope(client, journal=mine) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi", key="k"):
            assert [entry.key for entry in await mine.entries()] == ["k"]
            assert await theirs.entries() == []
    mine.close()
    theirs.close()


def test_a_prefix_for_a_journal_that_is_not_redis_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"prefix is for redis:// journals only, got prefix='x:'"):
        tether.open_journal(tmp_path / "j.sqlite3", prefix="x:")
