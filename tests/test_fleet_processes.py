"""A fleet of real processes on one shared journal (Redis, PostgreSQL), on asyncio and trio.

Two workers stream (``tests/fleet_child.py worker``), one is SIGKILLed; once its lease ran
out (a bounded poll of the store, which expires it on its own clock), the test's own process
reaps: the dead worker's response is cancelled, the live one is untouched (the emulator's
ledger says so). Then ``request_cancel`` from the test's process stops a stream a worker
process owns.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import tether
from tests.fleet_servers import close_journal
from tests.fleet_soak import trial
from tests.support import lease_ran_out
from tether.testing import ResponsesEmulator

CHILD = Path(__file__).with_name("fleet_child.py")
LEASE = "2.0"  # short, but a loaded machine can hold a worker's event loop for a second


@pytest.fixture(params=["redis", "postgres"])
def journal_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes started by the test; killed at the end, whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def start_worker(
    workers: list[subprocess.Popen[str]],
    base_url: str,
    journal: str,
    key: str,
    backend: str,
    lease: str = LEASE,
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(CHILD), "worker", base_url, journal, key, backend, lease],
        stdout=subprocess.PIPE,
        text=True,
    )
    workers.append(process)
    return process


async def read_line(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    return (await anyio.to_thread.run_sync(process.stdout.readline)).split()


@pytest.mark.leaves_responses_generating(
    "worker processes are killed at the end: their live responses run on"
)
async def test_a_reaper_cancels_only_the_killed_workers_response(
    journal_url: str,
    emulator: ResponsesEmulator,
    workers: list[subprocess.Popen[str]],
    anyio_backend: str,
) -> None:
    processes = [
        start_worker(workers, emulator.base_url, journal_url, f"job-{i}", anyio_backend)
        for i in range(2)
    ]
    ids = []
    for process in processes:
        ready, response_id = await read_line(process)
        assert ready == "READY"
        ids.append(response_id)
    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait()
    journal = tether.open_journal(journal_url)
    await lease_ran_out(journal, [ids[0]])
    close_journal(journal)
    async with emulator.async_client() as client:
        report = await tether.reap(client, journal_url, grace=5.0)
    assert [(e.response_id, r.status) for e, r in report.cancelled] == [(ids[0], "cancelled")]
    assert [e.response_id for e in report.skipped] == ids[1:]
    assert emulator.ledger[ids[0]].status == "cancelled"
    assert all(emulator.ledger[i].generating for i in ids[1:])
    assert all(process.poll() is None for process in processes[1:])


@pytest.mark.leaves_responses_generating(
    "worker processes are killed at the end: their live responses run on"
)
async def test_request_cancel_from_one_process_stops_a_stream_another_owns(
    journal_url: str,
    emulator: ResponsesEmulator,
    workers: list[subprocess.Popen[str]],
    anyio_backend: str,
) -> None:
    owner = start_worker(workers, emulator.base_url, journal_url, "conversation-42", anyio_backend)
    other = start_worker(workers, emulator.base_url, journal_url, "conversation-43", anyio_backend)
    ready, response_id = await read_line(owner)
    ready_other, other_id = await read_line(other)
    assert (ready, ready_other) == ("READY", "READY")
    async with emulator.async_client() as client:
        report = await tether.request_cancel(
            journal_url, key="conversation-42", client=client, wait=10.0
        )
    assert [e.response_id for e in report.stopped] == [response_id]
    assert await read_line(owner) == ["ENDED", "cancel_requested"]
    assert await anyio.to_thread.run_sync(owner.wait) == 0
    assert emulator.ledger[response_id].status == "cancelled"
    assert emulator.ledger[other_id].generating


async def test_ctrl_c_after_a_kill_a_reap_and_a_cancel_request_stops_every_worker(
    journal_url: str, emulator: ResponsesEmulator, anyio_backend: str
) -> None:
    """Issue 24's scenario, once per store and backend (``tests/fleet_soak.py``; many times
    by hand): SIGINT ends both live workers, after their responses were cancelled."""
    verdict = await trial(emulator, journal_url, anyio_backend, float(LEASE))
    assert verdict.ok, "\n".join(verdict.problems + verdict.stacks)


@pytest.mark.leaves_responses_generating(
    "worker processes are killed at the end: their live responses run on"
)
async def test_reap_right_after_a_sigkill_on_the_workers_host_cancels_at_once(
    journal_url: str,
    emulator: ResponsesEmulator,
    workers: list[subprocess.Popen[str]],
    anyio_backend: str,
) -> None:
    """Issue 24: the killed worker's process is gone, so its minute-long lease does not hold
    the reap; the live worker's entry is skipped, and the report says whose lease holds it."""
    processes = [
        start_worker(workers, emulator.base_url, journal_url, f"job-{i}", anyio_backend, "60")
        for i in range(2)
    ]
    ids = []
    for process in processes:
        ready, response_id = await read_line(process)
        assert ready == "READY"
        ids.append(response_id)
    processes[0].send_signal(signal.SIGKILL)
    await anyio.to_thread.run_sync(processes[0].wait)
    async with emulator.async_client() as client:
        report = await tether.reap(client, journal_url, grace=5.0)
    assert [(e.response_id, r.status) for e, r in report.cancelled] == [(ids[0], "cancelled")]
    assert [e.response_id for e in report.skipped] == ids[1:]
    (live,) = report.skipped
    assert report.reasons[live.intent].startswith(
        f"lease held by live owner {live.host}:{processes[1].pid} until "
    )
    assert emulator.ledger[ids[0]].status == "cancelled"
    assert emulator.ledger[ids[1]].generating
