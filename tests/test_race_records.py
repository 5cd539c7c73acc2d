"""A race's progress events (tether.races) as observers see them, on asyncio and trio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import tether
from tests.support import req
from tether import observe
from tether.races import RaceAttempt, RaceEvent
from tether.testing import EmulatedModel, Faults

if TYPE_CHECKING:
    import openai

    from tether.testing import ResponsesEmulator


RACE_EVENTS = (
    RaceEvent.Started,
    RaceEvent.AttemptStarted,
    RaceEvent.AttemptEnded,
    RaceEvent.Decided,
    RaceEvent.Ended,
)


async def _race_both_sent(emulator: ResponsesEmulator, client: openai.AsyncOpenAI) -> Any:
    """Race slow against fast, both sent before anything wins: an attempt never sent ends
    with no ``AttemptEnded``, and on trio the fast one could win before the slow one's
    request left (seen once in a full run)."""

    async def release_once_both_sent(hold: ResponsesEmulator.Hold) -> None:
        await emulator.wait_for(lambda ledger: len(ledger) == 2)
        hold.release()

    with emulator.hold("created") as hold:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(release_once_both_sent, hold)
            return await tether.race(client, [req("slow"), req("fast")])


async def test_race_reports_start_attempts_decision_and_end_in_order(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    events: list[Any] = []
    with observe.observing(events.append):
        result = await _race_both_sent(emulator, client)
    kinds = [type(e).__qualname__ for e in events if isinstance(e, RACE_EVENTS)]
    assert kinds[0] == "RaceEvent.Started"
    assert kinds[1:3] == ["RaceEvent.AttemptStarted", "RaceEvent.AttemptStarted"]
    assert kinds[-1] == "RaceEvent.Ended"
    assert kinds.count("RaceEvent.Decided") == 1
    assert kinds.count("RaceEvent.AttemptEnded") == 2
    assert kinds.index("RaceEvent.Decided") < kinds.index("RaceEvent.AttemptEnded")
    (ended,) = [e for e in events if isinstance(e, RaceEvent.Ended)]
    assert ended.result == result
    assert ended.exception is None
    (decided,) = [e for e in events if isinstance(e, RaceEvent.Decided)]
    assert decided.winner == 1


async def test_events_form_a_tree_race_attempt_stream(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """An attempt's parent is its race; its guarded stream's parent is the attempt."""
    events: list[Any] = []
    with observe.observing(events.append), observe.parent(4242):
        await _race_both_sent(emulator, client)
    (started,) = [e for e in events if isinstance(e, RaceEvent.Started)]
    assert started.parent == 4242
    assert started.models == ("slow", "fast")
    attempts = {e.index: e for e in events if isinstance(e, RaceEvent.AttemptStarted)}
    assert {a.parent for a in attempts.values()} == {started.id}
    streams = [e for e in events if isinstance(e, observe.StreamEvent.Started)]
    assert sorted(s.parent for s in streams) == sorted(a.id for a in attempts.values())
    ended = [e for e in events if isinstance(e, RaceEvent.AttemptEnded)]
    assert {e.id for e in ended} == {a.id for a in attempts.values()}
    assert {e.parent for e in ended} == {started.id}


async def test_attempt_events_carry_trigger_state_and_receipt(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """What a tracing span needs: why an attempt started, how it ended, its cancel receipt."""
    events: list[Any] = []
    with observe.observing(events.append):
        await tether.race(client, [req("silent"), req("fast")], stagger=0.05)
    triggers = {e.index: e.trigger for e in events if isinstance(e, RaceEvent.AttemptStarted)}
    assert triggers == {0: "primary", 1: "silence"}
    ended = {e.attempt.index: e.attempt for e in events if isinstance(e, RaceEvent.AttemptEnded)}
    assert ended[1].state == "won"
    assert ended[0].state == "lost"
    assert ended[0].receipt is not None
    assert ended[0].receipt.status == "cancelled"


async def test_skipped_attempts_report_no_start_and_no_end(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    events: list[Any] = []
    with observe.observing(events.append):
        await tether.race(client, [req("fast"), req("slow")], stagger=30)
    assert [e.index for e in events if isinstance(e, RaceEvent.AttemptStarted)] == [0]
    assert [e.attempt.index for e in events if isinstance(e, RaceEvent.AttemptEnded)] == [0]


async def test_failed_race_ends_with_its_error(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["broken"] = EmulatedModel(
        ttft=0.0, faults=Faults(fail_before_stream=(500, 500))
    )
    events: list[Any] = []
    with observe.observing(events.append), pytest.raises(tether.RaceFailed) as caught:
        await tether.race(client.with_options(max_retries=0), [req("broken")] * 2)
    (ended,) = [e for e in events if isinstance(e, RaceEvent.Ended)]
    assert ended.result is None
    assert ended.exception is caught.value
    assert not [e for e in events if isinstance(e, RaceEvent.Decided)]


async def test_race_stream_ends_with_its_result_after_the_block(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    events: list[Any] = []
    with observe.observing(events.append):
        async with tether.race_stream(client, [req("silent"), req("fast")]) as stream:
            assert not [e for e in events if isinstance(e, RaceEvent.Ended)]
            await stream.get_final_response()
    (ended,) = [e for e in events if isinstance(e, RaceEvent.Ended)]
    assert ended.result == stream.result
    assert ended.result is not None
    assert ended.result.winner.index == 1


async def test_live_stream_in_stream_started_shows_the_response_id(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """The CLI's live view reads ``StreamEvent.Started.stream``: the attempt's live GuardedStream."""
    events: list[Any] = []
    with observe.observing(events.append):
        result = await tether.race(client, [req("fast")])
    (started,) = [e for e in events if isinstance(e, observe.StreamEvent.Started)]
    assert result.winner.outcome is not None
    assert started.stream.response_id == result.winner.outcome.response_id
    assert started.stream.status == "completed"


def test_an_attempt_says_its_error_as_text_and_keeps_the_exception() -> None:
    """As on every record: ``error`` is ``"Type: message"`` (printable, comparable), the object
    is on ``exception``."""
    boom = ValueError("no such model")
    failed = RaceAttempt(index=0, model="m", state="failed", trigger="primary", exception=boom)
    assert (failed.error, failed.exception) == ("ValueError: no such model", boom)
    fine = RaceAttempt(index=1, model="m", state="won", trigger="primary")
    assert (fine.error, fine.exception) == (None, None)
