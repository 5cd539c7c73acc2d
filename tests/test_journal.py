"""The crash-safe journal (SQLite) and the reaper, on asyncio and trio.

What an entry records and when it goes; the file's privacy (no API key, owner-only mode);
`reap` after a SIGKILLed process (tests/crash_child.py), its skip reasons and its leases;
a locked journal that must not hold the stop path past grace.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import attrs
import openai
import pytest

import tether
from tests.support import lease_ran_out
from tether.testing import ResponsesEmulator

CHILD = Path(__file__).with_name("crash_child.py")


async def test_a_completed_stream_leaves_no_entry(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal) as scope:
        async with tether.guarded_stream(scope, model="fast", input="hi") as stream:
            await stream.get_final_response()
    assert await journal.entries() == []


async def test_a_live_stream_is_recorded_with_its_id(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
            (entry,) = await journal.entries()
            assert entry.response_id == stream.response_id
            assert entry.model == "slow"
            assert entry.pid == os.getpid()
    assert await journal.entries() == []


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace, the response runs on (the reaper's to cancel)"
)
async def test_an_unconfirmed_cancel_keeps_the_entry_for_the_reaper(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with tether.open_scope(client, journal=journal, grace=0.2) as scope:
        async with tether.guarded_stream(scope, model="hanging-cancel", input="hi") as stream:
            pass
    (entry,) = await journal.entries()
    assert entry.response_id == stream.response_id


async def test_a_failed_create_leaves_no_entry(tmp_path: Path, client: openai.AsyncOpenAI) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    with pytest.raises(openai.BadRequestError):
        async with tether.open_scope(client, journal=journal) as scope:
            async with tether.guarded_stream(scope, model="no-such-model", input="hi"):
                pass
    assert await journal.entries() == []


async def test_the_journal_file_is_private_to_its_user(tmp_path: Path) -> None:
    journal = tether.open_journal(tmp_path / "state" / "j.sqlite3")
    await journal.intend("x", key=None, model="m", base_url="http://127.0.0.1:1/v1")
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up, the response runs on (its journal entry is what is read)"
)
async def test_the_journal_never_stores_the_api_key(
    tmp_path: Path, emulator: ResponsesEmulator
) -> None:
    secret = "sk-do-not-leak-4242"
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with emulator.async_client(api_key=secret) as client:
        async with tether.open_scope(client, journal=journal, grace=0.2) as scope:
            async with tether.guarded_stream(scope, model="hanging-cancel", input="hi"):
                pass
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


async def test_reap_cancels_what_a_sigkilled_process_left_running(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI, anyio_backend: str
) -> None:
    """The crash test of issue 8: SIGKILL mid-stream, orphans on the server, reap, none left."""
    path = tmp_path / "j.sqlite3"
    count = 3
    child = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            emulator.base_url,
            str(path),
            str(count),
            anyio_backend,
            "1.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line.strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    await emulator.wait_for(lambda ledger: len(ledger.orphans()) == count)
    await lease_ran_out(tether.open_journal(path))
    report = await tether.reap(client, path)
    assert len(report.cancelled) == count
    assert all(receipt.status == "cancelled" for _, receipt in report.cancelled)
    assert emulator.ledger.orphans() == []
    assert await tether.open_journal(path).entries() == []
    assert (await tether.reap(client, path)).found == ()  # idempotent: nothing left to do


async def test_reap_right_after_a_sigkill_on_the_owners_host_cancels_at_once(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI, anyio_backend: str
) -> None:
    """Issue 24: the owner's process is gone, so its minute-long lease does not hold the reap."""
    path = tmp_path / "j.sqlite3"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), emulator.base_url, str(path), "2", anyio_backend, "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert (await anyio.to_thread.run_sync(child.stdout.readline)).strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert all(e.alive for e in await tether.open_journal(path).entries())
    report = await tether.reap(client, path)
    assert [receipt.status for _, receipt in report.cancelled] == ["cancelled"] * 2
    assert report.skipped == ()
    assert emulator.ledger.orphans() == []


def _machine_of(process: str | None) -> str:
    assert process is not None, "this test needs Linux's /proc"
    return process.rpartition("/")[0]


async def test_reap_takes_an_owner_whose_pid_now_names_another_process_for_dead(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    """A reused pid: the pid lives, but its start time is not the owner's."""
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    mine = journal.owner
    journal.owner = attrs.evolve(mine, process=f"{_machine_of(mine.process)}/1")
    async with journal.attach(nothing):
        await journal.intend("x", key=None, model="m", base_url=str(client.base_url))
        report = await tether.reap(client, journal.path)
    assert [e.intent for e in report.unknown] == ["x"]
    assert report.skipped == ()


async def test_reap_gives_each_skipped_entry_its_reason(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    path = tmp_path / "j.sqlite3"
    here = tether.open_journal(path, lease=60)
    away = tether.open_journal(path, lease=60)
    away.owner = attrs.evolve(away.owner, host="elsewhere", process="another-boot/pid:[1]/5")
    async with here.attach(nothing), away.attach(nothing):
        await here.intend("live", key=None, model="m", base_url=str(client.base_url))
        await here.intend("api", key=None, model="m", base_url="http://other.example/v1/")
        await away.intend("away", key=None, model="m", base_url=str(client.base_url))
        report = await tether.reap(client, path)
    reasons = {e.intent: report.reasons[e.intent] for e in report.skipped}
    owner = f"{here.owner.host}:{here.owner.pid}"
    assert reasons["live"].startswith(f"lease held by live owner {owner} until ")
    assert reasons["away"].startswith("owner on another host, lease current until ")
    assert reasons["api"] == "another API base URL (http://other.example/v1/)"


async def nothing(key: str) -> None:
    raise AssertionError(f"no cancel expected, got one for {key!r}")


async def leave_an_unconfirmed_entry(client: openai.AsyncOpenAI, path: Path) -> None:
    """A stream whose cancel hangs past grace: its journal entry stays, for the reaper."""
    async with tether.open_scope(client, journal=path, grace=0.2) as scope:
        async with tether.guarded_stream(scope, model="hanging-cancel", input="hi"):
            pass


@pytest.mark.leaves_responses_generating(
    "the reaper's cancels hang: the response runs on, its entry kept for the next run"
)
async def test_reap_keeps_an_unconfirmed_entry_for_the_next_run(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    path = tmp_path / "j.sqlite3"
    await leave_an_unconfirmed_entry(client, path)
    first = await tether.reap(client, path, grace=0.2)  # the scope dropped its lease on exit
    assert len(first.failed) == 1  # the cancel still hangs: kept for next time
    second = await tether.reap(client, path, grace=0.2)
    assert [e.intent for e in second.found] == [e.intent for e in first.found]


async def test_reap_skips_the_entries_of_an_owner_whose_lease_is_current(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    async with journal.attach(nothing):
        await journal.intend("x", key=None, model="m", base_url=str(client.base_url))
        report = await tether.reap(client, journal.path)
    assert [e.intent for e in report.skipped] == ["x"]
    assert report.unknown == ()


async def test_reap_removes_intents_that_never_got_an_id(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    journal = tether.open_journal(tmp_path / "j.sqlite3")
    await journal.intend("lost", key=None, model="m", base_url=str(client.base_url))
    report = await tether.reap(client, journal)  # no lease was ever taken: a dead owner
    assert [e.intent for e in report.unknown] == ["lost"]
    assert await journal.entries() == []


async def test_open_scope_rejects_a_journal_of_the_wrong_type(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(TypeError, match="journal"):
        async with tether.open_scope(client, journal=42):  # type: ignore[arg-type]
            pass
    assert emulator.ledger.requests == 0


async def test_a_locked_sqlite_journal_fails_within_its_timeout(tmp_path: Path) -> None:
    """Another process holds the write lock: the call fails (bounded), it does not wait 10 s."""
    journal = tether.open_journal(tmp_path / "j.sqlite3", timeout=0.1)
    await journal.intend("a", key=None, model="m", base_url="http://127.0.0.1:1/v1")
    blocker = sqlite3.connect(journal.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(tether.JournalError, match="locked"):
            await journal.finished("a")
    finally:
        blocker.close()
    assert [e.intent for e in await journal.entries()] == ["a"]  # nothing lost


async def test_a_write_locked_sqlite_journal_holds_neither_the_stop_nor_the_exit_past_grace(
    tmp_path: Path, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Issue 24, item 3: another process's write lock (``tether reap``'s ``BEGIN IMMEDIATE``)
    is waited for up to the journal's timeout (30 s here) by the worker thread; the stop and
    the scope's exit wait at most what is left of grace (0.5 s), and say so."""
    path = tmp_path / "j.sqlite3"
    journal = tether.open_journal(path, timeout=30.0)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with anyio.fail_after(10):  # generous next to the grace, well below the stall
            async with tether.open_scope(client, journal=journal, grace=0.5) as scope:
                async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
                    holder.execute("BEGIN IMMEDIATE")
        # the entry stays for reap: the removal never got the lock (readers are not blocked)
        assert [e.response_id for e in await journal.entries()] == [stream.response_id]
    finally:
        holder.close()  # the abandoned removal then gets the lock, and ends
    assert emulator.ledger[stream.response_id or ""].status == "cancelled"
    assert "no answer within grace" in (stream.outcome.cleanup_error or "")
