"""The store's failures: down at open, restarted mid-run, frozen on the stop path (real servers)."""

from __future__ import annotations

import signal

import anyio
import openai
import pytest

import tether
from tests.fleet_servers import RedisServer, free_port
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
    journal = tether.journal.RedisJournal(redis_url, lease=5.0)
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
    journal = tether.journal.RedisJournal(redis_url, lease=5.0, timeout=0.2)
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
