"""The fleet, in one process: leases, request_cancel, reap and two reapers, on every store.

Every test runs on SQLite, on a real Redis and on a real PostgreSQL (session servers from
``tests/fleet_servers.py``), each on asyncio and trio. A second journal object is a second
owner, exactly as another process would be (its own instance id and lease).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import openai
import pytest

import tether
from tests.fleet_servers import close_journal, connections_to
from tests.support import lease_ran_out, until
from tether.testing import ResponsesEmulator

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

MakeJournal = Callable[..., tether.journal.Journal]
LEASE = 3.0  # generous: a loaded machine can hold an event loop for a second


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def make_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeJournal]:
    """A factory of journal objects (owners) on one store, for this test alone (each closed
    at the end: a journal object is its owner's to close)."""
    if request.param == "sqlite":
        where = str(tmp_path / "journal.sqlite3")
    else:
        where = request.getfixturevalue(f"{request.param}_url")
    made: list[tether.journal.Journal] = []

    def make(lease: float = LEASE) -> tether.journal.Journal:
        made.append(tether.open_journal(where, lease=lease))
        return made[-1]

    yield make
    for journal in made:
        close_journal(journal)


@pytest.fixture(params=["redis", "postgres"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A store that holds connections open between calls: Redis or PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


async def create_background(client: openai.AsyncOpenAI, model: str = "slow") -> str:
    """Start a background response directly (no tether): what a dead owner leaves behind."""
    response = await client.responses.create(model=model, input="hi", background=True)
    return response.id


async def record_dead(journal: tether.journal.Journal, client: openai.AsyncOpenAI, key: str) -> str:
    """An entry with a live response, by an owner that never took a lease (it is dead)."""
    response_id = await create_background(client)
    intent = f"intent-{response_id}"
    await journal.intend(intent, key=key, model="slow", base_url=str(client.base_url))
    await journal.started(intent, response_id)
    return response_id


async def nothing(key: str) -> None:
    raise AssertionError(f"no cancel expected, got one for {key!r}")


async def test_an_entry_records_its_owner_key_id_and_api(
    make_journal: MakeJournal, client: openai.AsyncOpenAI
) -> None:
    journal = make_journal()
    async with tether.open_scope(client, journal=journal) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi", key="job-1") as stream:
            (entry,) = await journal.entries()
    assert (entry.key, entry.response_id, entry.model) == ("job-1", stream.response_id, "slow")
    assert (entry.owner, entry.pid, entry.host) == (
        journal.owner.instance,
        journal.owner.pid,
        journal.owner.host,
    )
    assert entry.base_url == str(client.base_url)
    assert entry.alive
    assert await journal.entries() == []


async def test_request_cancel_stops_the_owners_stream_with_its_own_reason(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    owner, requester = make_journal(), make_journal()
    opened = anyio.Event()
    async with tether.open_scope(client, journal=owner) as scope:
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                async with tether.guarded_stream(scope, model="slow", input="hi", key="k") as s:
                    opened.set()
                    async for _ in s:
                        pass

            tg.start_soon(read)
            await opened.wait()
            report = await tether.request_cancel(requester, key="k")
    (outcome,) = scope.outcomes
    assert outcome.reason == "cancel_requested"
    assert outcome.receipt is not None
    assert outcome.receipt.status == "cancelled"
    assert [e.response_id for e in report.stopped] == [outcome.response_id]
    assert report.ok
    assert emulator.ledger[outcome.response_id or ""].status == "cancelled"


async def test_request_cancel_stops_every_stream_of_the_key(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """A race: two streams hold one key; both are stopped, a third key is left alone."""
    owner = make_journal()
    opened: list[anyio.Event] = [anyio.Event() for _ in range(3)]
    streams: dict[str, tether.GuardedStream] = {}
    async with tether.open_scope(client, journal=owner) as scope:
        async with anyio.create_task_group() as tg:

            async def read(index: int, key: str) -> None:
                async with tether.guarded_stream(scope, model="slow", input="hi", key=key) as s:
                    streams[key] = s
                    opened[index].set()
                    async for _ in s:
                        pass

            for index, key in enumerate(["race", "race", "other"]):
                tg.start_soon(read, index, key)
            for event in opened:
                await event.wait()
            report = await tether.request_cancel(make_journal(), key="race")
            assert len(report.stopped) == 2
            assert emulator.ledger[streams["other"].response_id or ""].generating
            tg.cancel_scope.cancel()
    reasons = sorted(o.reason for o in scope.outcomes)
    assert reasons == ["cancel_requested", "cancel_requested", "scope_cancelled"]


async def test_request_cancel_cancels_a_dead_owners_response_itself(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    dead = make_journal()
    response_id = await record_dead(dead, client, "orphaned-job")
    report = await tether.request_cancel(make_journal(), key="orphaned-job", client=client)
    assert [(e.response_id, r.status) for e, r in report.cancelled] == [(response_id, "cancelled")]
    assert report.ok
    assert emulator.ledger[response_id].status == "cancelled"
    assert await dead.entries() == []


@pytest.mark.leaves_responses_generating(
    "a dead owner's response that request_cancel cannot cancel without a client"
)
async def test_request_cancel_without_a_client_leaves_a_dead_owners_entry(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    dead = make_journal()
    response_id = await record_dead(dead, client, "orphaned-job")
    report = await tether.request_cancel(make_journal(), key="orphaned-job")
    assert [e.response_id for e in report.left] == [response_id]
    assert not report.ok
    assert emulator.ledger[response_id].generating
    assert len(await dead.entries()) == 1


async def test_request_cancel_of_an_unknown_key_finds_nothing(make_journal: MakeJournal) -> None:
    journal = make_journal()
    await journal.intend("i", key="a", model="m", base_url="http://127.0.0.1:1/v1")
    report = await tether.request_cancel(journal, key="b")
    assert report.found == ()
    assert not report.ok


async def test_reap_never_touches_a_live_owners_entries(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    owner = make_journal()
    async with tether.open_scope(client, journal=owner) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi") as stream:
            report = await tether.reap(client, make_journal())
            assert [e.response_id for e in report.skipped] == [stream.response_id]
            assert report.cancelled == ()
            assert emulator.ledger[stream.response_id or ""].generating
    assert stream.outcome.reason == "break"


async def test_two_reapers_at_once_cancel_and_report_each_response_once(
    make_journal: MakeJournal, emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    dead = make_journal()
    ids = {await record_dead(dead, client, f"job-{i}") for i in range(12)}
    reports: list[tether.journal.ReapReport] = []

    async def reaper() -> None:
        reports.append(await tether.reap(client, make_journal()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper)
        tg.start_soon(reaper)
    first, second = ({e.response_id for e, _ in r.cancelled} for r in reports)
    assert first | second == ids
    assert first.isdisjoint(second)
    assert all(emulator.ledger[i].status == "cancelled" for i in ids)
    assert await dead.entries() == []


async def test_an_owners_entries_are_reapable_once_its_lease_runs_out(
    make_journal: MakeJournal, client: openai.AsyncOpenAI
) -> None:
    """The lease lapses on the store's clock: wait with a bounded poll of the store."""
    owner = make_journal()
    async with owner.attach(nothing):
        await record_dead(owner, client, "k")  # recorded while the lease is held
        (entry,) = await owner.entries()
        assert entry.alive
    # attach dropped the lease on exit: reapable at once, no wait for the TTL
    (entry,) = await owner.entries()
    assert not entry.alive
    report = await tether.reap(client, make_journal())
    assert len(report.cancelled) == 1


@pytest.mark.leaves_responses_generating("a dead owner's response: nobody cancels it")
async def test_a_stopped_heartbeat_lets_the_lease_run_out_by_itself(
    make_journal: MakeJournal, client: openai.AsyncOpenAI
) -> None:
    """Like a SIGKILL: the lease is written once, never renewed, never dropped."""
    owner = make_journal(lease=0.3)
    await record_dead(owner, client, "k")
    # The lease once the stream is open: under load the open alone outlasted the 0.3 s lease,
    # and the entry was dead before it was looked at.
    await owner._renew([])  # type: ignore[attr-defined]
    assert [e.alive for e in await owner.entries()] == [True]
    await lease_ran_out(owner)


async def test_attach_lets_the_body_exception_through_unwrapped(make_journal: MakeJournal) -> None:
    journal = make_journal()
    error = KeyError("mine")
    with pytest.raises(KeyError) as caught:
        async with journal.attach(nothing):
            raise error
    assert caught.value is error
    assert not isinstance(caught.value, ExceptionGroup)


async def test_attach_never_swallows_a_cancellation(make_journal: MakeJournal) -> None:
    journal = make_journal()
    reached = False
    with anyio.CancelScope() as scope:
        async with journal.attach(nothing):
            scope.cancel()
            await anyio.sleep_forever()
        reached = True
    assert scope.cancelled_caught
    assert not reached


async def test_reap_of_a_missing_sqlite_journal_is_an_error_and_creates_nothing(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    path = tmp_path / "typo" / "journal.sqlite3"
    with pytest.raises(tether.JournalError, match=r"no journal at .*typo"):
        await tether.reap(client, path)
    assert not (tmp_path / "typo").exists()


async def test_reap_of_a_file_that_is_not_a_journal_is_an_error(
    tmp_path: Path, client: openai.AsyncOpenAI
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, not a journal\n" * 100)
    with pytest.raises(tether.JournalError, match="not a tether journal"):
        await tether.reap(client, path)


async def test_reap_of_a_database_without_a_journal_is_an_error(
    postgres_url: str, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(tether.JournalError, match="no tether journal"):
        await tether.reap(client, postgres_url)


async def test_a_scope_closes_the_connections_of_a_journal_it_opened_from_a_url(
    server_url: str, client: openai.AsyncOpenAI
) -> None:
    before = connections_to(server_url)
    async with tether.open_scope(client, journal=server_url) as scope:
        async with tether.guarded_stream(scope, model="fast", input="hi") as stream:
            await stream.get_final_response()
        assert connections_to(server_url) > before  # the journal is connected while in use
    assert connections_to(server_url) == before


async def test_a_scope_leaves_a_journal_object_it_was_given_open_for_its_owner(
    server_url: str, client: openai.AsyncOpenAI
) -> None:
    before = connections_to(server_url)
    journal = tether.open_journal(server_url)
    async with tether.open_scope(client, journal=journal):
        pass
    assert connections_to(server_url) > before
    close_journal(journal)
    assert connections_to(server_url) == before


async def create_journal(url: str, client: openai.AsyncOpenAI) -> None:
    """Write to the store once, so that a journal exists there (reap never creates one)."""
    async with tether.open_scope(client, journal=url) as scope:
        async with tether.guarded_stream(scope, model="fast", input="hi") as stream:
            await stream.get_final_response()


async def test_a_reap_that_fails_closes_the_connections_of_the_journal_it_opened(
    postgres_url: str, client: openai.AsyncOpenAI
) -> None:
    before = connections_to(postgres_url)
    with pytest.raises(tether.JournalError, match="no tether journal") as caught:
        await tether.reap(client, postgres_url)  # the traceback holds reap's frames
    assert caught.value.__traceback__ is not None
    assert connections_to(postgres_url) == before


async def test_a_journal_dropped_without_close_closes_its_connections_when_collected(
    server_url: str, client: openai.AsyncOpenAI
) -> None:
    await create_journal(server_url, client)
    before = connections_to(server_url)
    journal = tether.open_journal(server_url)
    await journal.check()
    assert connections_to(server_url) > before
    del journal
    gc.collect()
    assert connections_to(server_url) == before


async def wait_for_entries(journal: tether.journal.Journal) -> list[tether.journal.JournalEntry]:
    """The journal's entries once there are any (the owner's heartbeat decides)."""
    return await until(journal.entries, "an entry in the journal", timeout=10.0)


async def test_a_live_owner_writes_again_the_entries_its_store_lost(
    make_journal: MakeJournal, client: openai.AsyncOpenAI
) -> None:
    """Issue 24, item 9: an entry the store lost comes back, whole, at the next heartbeat."""
    owner = make_journal(lease=1.5)
    async with tether.open_scope(client, journal=owner) as scope:
        async with tether.guarded_stream(scope, model="slow", input="hi", key="k") as stream:
            (written,) = await owner.entries()
            await make_journal().finished(written.intent)  # lost behind the owner's back
            (restored,) = await wait_for_entries(owner)
            assert restored == written
            assert restored.response_id == stream.response_id
    assert await owner.entries() == []  # and removed as usual once stopped
