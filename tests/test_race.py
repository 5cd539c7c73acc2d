"""race and race_stream against the emulator's ledger, on asyncio and trio."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import openai
import pytest

import tether
from tests.support import Boom, no_orphans, req
from tether import AttemptRejected, RaceFailed, observe, race, race_stream
from tether.races import RaceEvent
from tether.testing import EmulatedModel, Faults

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from openai.types.responses import Response

    from tether.races import RaceResult
    from tether.testing import ResponsesEmulator


@asynccontextmanager
async def every_request_sent_first(
    emulator: ResponsesEmulator, attempts: int
) -> AsyncIterator[None]:
    """Hold each response at ``response.created`` until all *attempts* requests have arrived,
    so that no attempt can win before the others are sent. Otherwise, on a busy machine, a
    fast attempt can win before a slow one's request has left, and the slow one is stopped
    with nothing to cancel (no receipt, no cancel)."""
    with emulator.hold("created") as created:
        async with anyio.create_task_group() as tg:

            async def release() -> None:
                await emulator.wait_for(lambda ledger: len(ledger.responses) == attempts)
                created.release()

            tg.start_soon(release)
            yield


async def race_all_sent(emulator: ResponsesEmulator, *args: Any, **kwargs: Any) -> RaceResult:
    """``race(*args, **kwargs)`` under `every_request_sent_first`."""
    async with every_request_sent_first(emulator, len(args[1])):
        return await race(*args, **kwargs)


# ------------------------------------------------------------------ deciding


async def test_first_completed_wins_and_every_loser_is_cancelled_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    result = await race_all_sent(
        emulator, client, [req("slow"), req("fast"), req("slow"), req("slow")]
    )
    assert result.winner.index == 1
    assert result.winner.state == "won"
    assert result.winner.response is not None
    assert result.winner.response.status == "completed"
    assert [loser.index for loser in result.losers] == [0, 2, 3]
    for loser in result.losers:
        assert loser.state == "lost"
        assert loser.outcome is not None
        assert loser.outcome.reason == "race_lost"
        assert loser.receipt is not None
        assert loser.receipt.status == "cancelled"
        assert emulator.ledger[loser.outcome.response_id or ""].status == "cancelled"


async def test_losers_are_cancelled_concurrently(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """All N cancel requests are in flight at once: proven with a hold, not with timing."""
    losers = 6
    results: list[tether.StreamOutcome] = []

    async def run() -> None:
        result = await race(client, [req("fast")] + [req("slow")] * losers)
        results.extend(loser.outcome for loser in result.losers if loser.outcome)

    with emulator.hold("cancel") as hold, emulator.hold("created") as created:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # Every attempt is sent before the fast one can win: none is skipped.
            await emulator.wait_for(lambda ledger: len(ledger.responses) == losers + 1)
            created.release()
            await emulator.wait_for(lambda ledger: ledger.cancels_in_flight == losers)
            hold.release()
    assert emulator.ledger.max_concurrent_cancels == losers
    assert len(results) == losers
    assert all(o.receipt is not None and o.receipt.status == "cancelled" for o in results)


async def test_parallel_attempts_without_concurrency_slots_all_start_in_one_scheduler_pass(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Counted in passes of a ticker task, not in time: before, each attempt waited for the
    one before it to run (``tg.start``), two passes each."""
    passes = 0
    started_in_pass: list[int] = []
    attempts = 10

    def observer(event: object) -> None:
        if isinstance(event, RaceEvent.AttemptStarted):
            started_in_pass.append(passes)

    async def ticker() -> None:
        nonlocal passes
        while len(started_in_pass) < attempts:
            passes += 1
            await anyio.lowlevel.checkpoint()

    with observe.observing(observer):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await race(client, [req("fast")] + [req("slow")] * (attempts - 1))
    assert len(started_in_pass) == attempts
    assert max(started_in_pass) - min(started_in_pass) <= 1


async def test_predicate_rejection_continues_the_race(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["says-no"] = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, text="no")
    emulator.models["says-yes"] = EmulatedModel(ttft=0.3, tokens_per_s=5000.0, text="yes indeed")
    seen: list[str] = []

    def says_yes(response: Response) -> bool:
        seen.append(response.output_text)
        return response.output_text.startswith("yes")

    result = await race(client, [req("says-no"), req("says-yes")], win=says_yes)
    assert seen == ["no", "yes indeed"]
    assert result.winner.index == 1
    assert result.win == "says_yes"
    (rejected,) = result.losers
    assert rejected.state == "rejected"
    assert isinstance(rejected.exception, AttemptRejected)
    assert rejected.outcome is not None
    assert rejected.outcome.reason == "completed"


async def test_every_attempt_rejected_raises_race_failed(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(RaceFailed) as caught:
        await race(client, [req("fast"), req("fast")], win=lambda response: False)
    assert len(caught.value.exceptions) == 2
    assert all(isinstance(e, AttemptRejected) for e in caught.value.exceptions)
    assert [o.reason for o in caught.value.outcomes] == ["completed", "completed"]


async def test_first_token_race_reads_the_winner_to_completion(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["steady"] = EmulatedModel(ttft=0.0, tokens_per_s=2000.0, length=40)
    result = await race_all_sent(
        emulator, client, [req("silent"), req("steady")], win="first_token"
    )
    assert result.win == "first_token"
    assert result.winner.index == 1
    assert result.winner.response is not None
    assert result.winner.response.status == "completed"
    assert result.winner.time_to_first_token is not None
    assert result.started_at <= result.decided_at <= result.ended_at
    (loser,) = result.losers
    assert loser.receipt is not None
    assert loser.receipt.status == "cancelled"


async def test_late_second_winner_is_treated_as_a_loser(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Two attempts released together: one wins, the other's outcome says it lost."""
    emulator.models["instant"] = EmulatedModel(ttft=0.0, tokens_per_s=1e6, length=1)

    async def run(out: list[Any]) -> None:
        out.append(await race(client, [req("instant"), req("instant")]))

    out: list[Any] = []
    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, out)
            await emulator.wait_for(lambda ledger: len(ledger) == 2)
            hold.release()
    (result,) = out
    assert sorted(a.state for a in result.attempts) == ["lost", "won"]
    (loser,) = result.losers
    assert loser.outcome.reason == "race_lost"
    assert emulator.ledger[loser.outcome.response_id].status in ("cancelled", "completed")


# ------------------------------------------------------------------- hedging


async def test_stagger_starts_the_backup_only_after_silence(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    result = await race(client, [req("silent"), req("fast")], stagger=0.05)
    primary, backup = result.attempts
    assert backup.trigger == "silence"
    assert result.winner.index == 1
    assert primary.state == "lost"
    assert primary.receipt is not None
    assert primary.receipt.status == "cancelled"
    records = {r.model: r for r in emulator.ledger}
    assert records["fast"].created_at > records["silent"].created_at


async def test_fast_primary_never_sends_a_backup(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    result = await race(client, [req("fast"), req("slow")], stagger=30)
    assert result.winner.index == 0
    assert result.attempts[1].state == "skipped"
    assert result.attempts[1].trigger is None
    assert result.losers == ()
    assert emulator.ledger.requests == 1


async def test_streaming_primary_starts_no_backup(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The classic hedge backs up a silent attempt, not a slow one that already streams."""
    # It streams for 1.5 s, three staggers: its first token comes long before the first.
    emulator.models["streams-slowly"] = EmulatedModel(ttft=0.0, tokens_per_s=4.0, length=6)
    result = await race(client, [req("streams-slowly"), req("fast")], stagger=0.5)
    assert result.winner.index == 0
    assert result.attempts[1].state == "skipped"
    assert emulator.ledger.requests == 1


async def test_backup_starts_at_once_when_the_primary_fails(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["broken"] = EmulatedModel(
        ttft=0.0, faults=Faults(fail_before_stream=(500, 500, 500))
    )
    no_retries = client.with_options(max_retries=0)
    with anyio.move_on_after(20) as watchdog:  # the stagger alone would wait an hour
        result = await race(no_retries, [req("broken"), req("fast")], stagger=3600)
    assert not watchdog.cancel_called
    primary, backup = result.attempts
    assert primary.state == "failed"
    assert isinstance(primary.exception, openai.InternalServerError)
    assert backup.trigger == "failure"
    assert result.winner.index == 1


async def test_all_attempts_failing_raise_race_failed_with_every_error_and_outcome(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["broken"] = EmulatedModel(
        ttft=0.0, faults=Faults(fail_before_stream=(500, 503))
    )
    no_retries = client.with_options(max_retries=0)
    with pytest.raises(RaceFailed) as caught:
        await race(no_retries, [req("broken"), req("broken"), req("flat-error")])
    failed = caught.value
    assert isinstance(failed, ExceptionGroup)
    assert len(failed.exceptions) == 3
    assert isinstance(failed.exceptions[0], openai.InternalServerError)
    assert isinstance(failed.exceptions[1], openai.InternalServerError)
    assert isinstance(failed.exceptions[2], tether.ResponseNotCompleted)
    assert len(failed.outcomes) == 3
    assert failed.outcomes[2].status == "failed"


async def test_max_concurrency_bounds_attempts_in_flight(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """No three responses ever overlap on the server (read from the ledger's timestamps)."""
    emulator.models["medium"] = EmulatedModel(ttft=0.0, tokens_per_s=400.0, length=10)
    with pytest.raises(RaceFailed):
        await race(client, [req("medium")] * 6, win=lambda response: False, max_concurrency=2)
    records = emulator.ledger.responses
    assert len(records) == 6
    for record in records:
        overlapping = [
            other
            for other in records
            if other.created_at <= record.created_at < (other.finished_at or float("inf"))
        ]
        assert len(overlapping) <= 2


# -------------------------------------------------------- leaving a race early


async def test_outer_cancel_mid_race_cancels_every_attempt_and_propagates(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    returned = False

    async def run(scope: anyio.CancelScope) -> None:
        nonlocal returned
        with scope:
            await race(client, [req("slow"), req("slow"), req("slow")])
            returned = True

    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()
        tg.start_soon(run, scope)
        await emulator.wait_for(
            lambda ledger: len(ledger) == 3 and all(r.tokens_generated > 0 for r in ledger)
        )
        scope.cancel()
    assert not returned
    assert scope.cancelled_caught
    assert [r.status for r in emulator.ledger] == ["cancelled"] * 3


async def test_outer_deadline_raises_timeout_error_after_cancelling(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(TimeoutError):
        with anyio.fail_after(1.0):
            await race(client, [req("slow"), req("silent")])
    assert {r.status for r in emulator.ledger} == {"cancelled"}


async def test_cancel_while_attempts_are_still_opening_leaves_no_orphan(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async def run(scope: anyio.CancelScope) -> None:
        with scope:
            await race(client, [req("slow"), req("slow")])

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(run, scope)
            await emulator.wait_for(lambda ledger: len(ledger) == 2)
            scope.cancel()  # no response.created yet: the ids are unknown
            hold.release()
    assert [r.status for r in emulator.ledger] == ["cancelled"] * 2
    no_orphans(emulator)


async def test_decision_while_a_loser_is_still_opening_cancels_it_once_created(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["late-created"] = EmulatedModel(ttft=0.0, faults=Faults(created_delay=0.3))
    result = await race(client, [req("late-created"), req("fast")])
    assert result.winner.index == 1
    (loser,) = result.losers
    assert loser.state == "lost"
    assert loser.receipt is not None
    assert loser.receipt.status == "cancelled"
    assert loser.outcome is not None
    assert loser.outcome.events == 1  # response.created only: the body never ran


async def test_predicate_exception_propagates_unchanged_and_cancels_everything(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    def explode(response: Response) -> bool:
        raise Boom("predicate bug")

    with pytest.raises(Boom, match="predicate bug"):
        await race(client, [req("fast"), req("slow")], win=explode)


# ----------------------------------------------------------------- race_stream


async def test_first_token_race_stream_yields_the_winner_from_sequence_zero_without_gap(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    sequence: list[int] = []
    async with (
        every_request_sent_first(emulator, 2),
        race_stream(client, [req("silent"), req("slow")]) as stream,
    ):
        assert stream.winner_index == 1
        async for event in stream:
            sequence.append(event.sequence_number)
            if len(sequence) == 12:
                break
    assert sequence == list(range(12))
    winner = emulator.ledger[stream.response_id or ""]
    assert winner.status == "cancelled"  # leaving early cancels the winner too
    assert stream.outcome.reason == "break"
    result = stream.result
    assert result.winner.index == 1
    (loser,) = result.losers
    assert loser.receipt is not None
    assert loser.receipt.status == "cancelled"


async def test_race_stream_read_to_the_end_completes_the_winner(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with race_stream(client, [req("fast"), req("silent")]) as stream:
        text = "".join([t async for t in stream.text_deltas()])
    assert stream.outcome.reason == "completed"
    assert stream.result.winner.response is not None
    assert stream.result.winner.response.output_text == text
    assert emulator.ledger[stream.response_id or ""].status == "completed"


async def test_race_stream_first_completed_replays_every_event(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with race_stream(client, [req("slow"), req("fast")], win="first_completed") as stream:
        response = await stream.get_final_response()
    assert stream.winner_index == 1
    assert response.status == "completed"
    record = emulator.ledger[response.id]
    assert stream.outcome.events == len(record.events)


async def test_race_stream_body_exception_propagates_unchanged_and_cancels_the_winner(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(Boom):
        async with race_stream(client, [req("slow"), req("silent")]) as stream:
            async for _ in stream.text_deltas():
                raise Boom
    assert stream.outcome.reason == "exception"
    assert {r.status for r in emulator.ledger} == {"cancelled"}


async def test_race_stream_outer_cancel_cancels_winner_and_losers(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with anyio.CancelScope() as scope:
        async with race_stream(client, [req("slow"), req("silent")]) as stream:
            async for _ in stream.text_deltas():
                scope.cancel()
    assert scope.cancelled_caught
    assert stream.outcome.reason == "scope_cancelled"
    assert {r.status for r in emulator.ledger} == {"cancelled"}


async def test_race_stream_with_no_winner_raises_race_failed_on_entry(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["broken"] = EmulatedModel(
        ttft=0.0, faults=Faults(fail_before_stream=(500, 500))
    )
    body_ran = False
    with pytest.raises(RaceFailed) as caught:
        async with race_stream(client.with_options(max_retries=0), [req("broken")] * 2):
            body_ran = True
    assert not body_ran
    assert len(caught.value.exceptions) == 2


# ------------------------------------------------------------------- arguments


async def test_race_in_a_scope_and_across_clients(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with emulator.async_client() as other:
        async with tether.open_scope(client, grace=2) as scope:
            result = await race_all_sent(emulator, scope, [req("slow"), req("fast", client=other)])
    assert result.winner.index == 1
    assert result.losers[0].receipt is not None
    assert result.losers[0].receipt.status == "cancelled"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "shown"),
    [
        ([], {}, ValueError, r"requests must not be empty, got \[\]"),
        ("hi", {}, TypeError, "requests must be a sequence"),
        ([{"input": "hi"}], {}, TypeError, r"requests\[0\].*model"),
        (["fast"], {}, TypeError, r"requests\[0\]"),
        ([{"model": "fast", "input": "hi", "stream": True}], {}, ValueError, "stream"),
        ([{"model": "fast", "input": "hi"}], {"stagger": -1}, ValueError, "stagger.*-1"),
        ([{"model": "fast", "input": "hi"}], {"stagger": "1s"}, TypeError, "stagger.*1s"),
        ([{"model": "fast", "input": "hi"}], {"win": 42}, TypeError, "win.*42"),
        ([{"model": "fast", "input": "hi"}], {"grace": 0}, ValueError, "grace"),
        ([{"model": "fast", "input": "hi"}], {"max_concurrency": 0}, ValueError, "max_concurr"),
        ([{"model": "fast", "input": "hi", "client": "x"}], {}, TypeError, "client"),
    ],
)
async def test_bad_arguments_are_refused_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    args: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    shown: str,
) -> None:
    with pytest.raises(error, match=shown):
        await race(client, args, **kwargs)
    with pytest.raises(error, match=shown):
        race_stream(client, args, **kwargs)
    assert emulator.ledger.requests == 0


async def test_sync_client_is_refused_before_any_request(emulator: ResponsesEmulator) -> None:
    with emulator.client() as sync_client, pytest.raises(TypeError, match=r"tether\.sync"):
        await race(sync_client, [req("fast")])  # type: ignore[arg-type]
    assert emulator.ledger.requests == 0


async def test_max_concurrency_with_a_scope_is_refused(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client) as scope:
        with pytest.raises(ValueError, match="open_scope"):
            await race(scope, [req("fast")], max_concurrency=2)
    assert emulator.ledger.requests == 0


# ------------------------------------------------------------ concurrency slots


async def test_attempts_take_concurrency_slots_in_request_order(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """With one slot, the server sees the attempts strictly in request order (both backends)."""
    names = [f"m{i}" for i in range(8)]
    for name in names:
        emulator.models[name] = EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=3)
    with pytest.raises(RaceFailed):
        await race(client, [req(n) for n in names], win=lambda r: False, max_concurrency=1)
    assert [r.model for r in emulator.ledger] == names


async def test_fast_first_attempt_is_not_queued_behind_later_ones(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Regression: on trio, late attempts could take the slots first and the fast one waited."""
    result = await race(client, [req("fast")] + [req("slow")] * 29, max_concurrency=2)
    assert result.winner.index == 0
    # The fast one and the next took the two slots (the next one's request may not have
    # left yet when the fast one won, on a busy machine); none of the rest was ever sent.
    assert emulator.ledger.requests <= 2
    assert [a.state for a in result.attempts[2:]] == ["skipped"] * 28


# ------------------------------------------------------------------- journal


async def test_attempt_with_its_own_client_is_journaled(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI, tmp_path: Any
) -> None:
    """After a crash `tether reap` must see every attempt, including another client's."""
    journal = tether.open_journal(tmp_path / "journal.sqlite")
    entries: list[tether.journal.JournalEntry] = []
    async with emulator.async_client() as other:
        async with tether.open_scope(client, journal=journal) as scope:
            with emulator.hold("created") as hold:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(race, scope, [req("slow"), req("fast", client=other)])
                    await emulator.wait_for(lambda ledger: len(ledger) == 2)
                    entries.extend(await journal.entries())
                    tg.cancel_scope.cancel()
                    hold.release()
    assert sorted(entry.model or "" for entry in entries) == ["fast", "slow"]
    assert await journal.entries() == []  # both cancelled and confirmed: forgotten


# ------------------------------------------------------------------ times


async def test_losers_confirmed_and_winner_ended_are_reported_apart(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """A first_token winner finishes while its loser's cancel is held: two separate times."""
    emulator.models["steady"] = EmulatedModel(ttft=0.0, tokens_per_s=2000.0, length=20)
    out: list[tether.races.RaceResult] = []

    async def run() -> None:
        async with every_request_sent_first(emulator, 2):
            out.append(await race(client, [req("silent"), req("steady")], win="first_token"))

    with emulator.hold("cancel") as hold:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await emulator.wait_for(
                lambda ledger: (
                    ledger.cancels_in_flight == 1
                    and any(r.model == "steady" and r.status == "completed" for r in ledger)
                )
            )
            hold.release()
    (result,) = out
    assert result.decided_at <= result.winner_ended_at < result.losers_confirmed_at
    assert result.ended_at >= result.losers_confirmed_at
    (loser,) = result.losers
    assert loser.outcome is not None
    assert result.losers_confirmed_at >= loser.outcome.ended_at


async def test_race_without_losers_reports_them_confirmed_at_the_decision(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    result = await race(client, [req("fast"), req("slow")], stagger=30)
    assert result.losers == ()
    assert result.losers_confirmed_at == result.decided_at


# ------------------------------------------------------------ win as a string


async def test_win_accepts_the_names_first_token_and_first_completed(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    by_token = await race(client, [req("silent"), req("fast")], win="first_token")
    assert by_token.win == "first_token"
    assert by_token.winner.index == 1
    by_completion = await race(client, [req("slow"), req("fast")], win="first_completed")
    assert by_completion.win == "first_completed"
    assert by_completion.winner.index == 1


async def test_unknown_win_name_is_refused_before_any_request(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(ValueError, match=r"win must be 'first_completed' or 'first_token'.*last"):
        await race(client, [req("fast")], win="last")  # type: ignore[arg-type]
    assert emulator.ledger.requests == 0


async def test_a_win_string_names_its_condition_in_the_result(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    result = await race(client, [req("fast")], win="first_token")
    assert result.win == "first_token"
