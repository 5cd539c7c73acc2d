"""Deadline-bound agents: the tool loop, its budget, and its records, on asyncio and trio.

Scripted models (`tether.testing.Turn`) make the function calls; tests synchronise on
events and the emulator's ledger, never on sleeps. The deadline tests use budgets of a
second or two: the deadline is the thing under test.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
import pydantic
import pytest

import tether
from tests.support import Boom, no_orphans
from tether._agent import run_agent
from tether._tools import AgentContext, agent_tool
from tether.testing import EmulatedModel
from tether.testing._models import FunctionCall, Turn

if TYPE_CHECKING:
    import openai

    from tether.testing import ResponsesEmulator

FAST: dict[str, Any] = {"ttft": 0.0, "tokens_per_s": 5000.0}


def scripted(*turns: Turn) -> EmulatedModel:
    return EmulatedModel(**FAST, script=turns)


def calls(*names: str, **arguments: Any) -> Turn:
    return Turn(calls=[FunctionCall(name=name, arguments=arguments) for name in names])


ECHO = Turn(text="Outputs:", echo_outputs=True)


# ------------------------------------------------------------------------ tools


@agent_tool
async def get_weather(city: str) -> dict[str, Any]:
    """The current weather in a city.

    Args:
        city: The city, e.g. "Paris".
    """
    return {"city": city, "celsius": 18}


@agent_tool
def to_fahrenheit(celsius: float) -> float:
    """Convert Celsius to Fahrenheit."""
    return celsius * 9 / 5 + 32


async def noop() -> str:
    return "ok"


# --------------------------------------------------------------- the happy path


async def test_two_tools_three_turns_complete_with_every_output_reaching_the_model(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["weather"] = scripted(
        calls("get_weather", city="Paris"),
        calls("to_fahrenheit", celsius=18),
        Turn(text="It is:", echo_outputs=True),
    )
    async with tether.open_scope(client, deadline=30) as scope:
        result = await run_agent(
            scope, model="weather", input="Paris, in F?", tools=[get_weather, to_fahrenheit]
        )
    assert result.reason == "completed"
    assert [len(turn.tool_calls) for turn in result.turns] == [1, 1, 0]
    weather, convert = result.tool_calls
    assert (weather.name, json.loads(weather.arguments)) == ("get_weather", {"city": "Paris"})
    assert json.loads(weather.output or "") == {"city": "Paris", "celsius": 18}
    assert (convert.name, convert.output) == ("to_fahrenheit", "64.4")
    assert result.output_text.splitlines() == ["It is:", "64.4"]
    assert result.final_response is not None
    assert result.final_response.previous_response_id == result.turns[1].response_id
    assert [turn.status for turn in result.turns] == ["completed"] * 3
    assert result.total_tokens == sum(
        turn.usage.total_tokens for turn in result.turns if turn.usage
    )
    assert len(scope.outcomes) == 3


async def test_calls_of_one_turn_run_concurrently(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Each tool waits for the other to start: one after the other, they would deadlock."""
    emulator.models["parallel"] = scripted(calls("ping", "pong"), ECHO)
    ping_started, pong_started = anyio.Event(), anyio.Event()

    async def ping() -> str:
        ping_started.set()
        await pong_started.wait()
        return "ping done"

    async def pong() -> str:
        pong_started.set()
        await ping_started.wait()
        return "pong done"

    with anyio.move_on_after(10) as watchdog:
        result = await run_agent(client, model="parallel", input="go", tools=[ping, pong])
    assert not watchdog.cancel_called
    assert result.output_text.splitlines() == ["Outputs:", "ping done", "pong done"]


async def test_sync_tools_run_in_a_worker_thread(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["sync"] = scripted(calls("where"), ECHO)
    threads: list[int] = []

    def where() -> str:
        threads.append(threading.get_ident())
        return "here"

    result = await run_agent(client, model="sync", input="go", tools=[where])
    assert result.tool_calls[0].output == "here"
    assert threads
    assert threads[0] != threading.get_ident()


async def test_a_tool_sees_its_turn_call_id_and_the_time_left(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["context"] = scripted(calls("noop"), calls("probe"), ECHO)
    seen: list[AgentContext] = []

    async def probe(ctx: AgentContext) -> str:
        seen.append(ctx)
        return f"{ctx.remaining():.0f}"

    async with tether.open_scope(client, deadline=100, grace=5) as scope:
        result = await run_agent(scope, model="context", input="go", tools=[noop, probe])
        assert 0 < seen[0].remaining() < scope.remaining()
    [ctx] = seen
    assert (ctx.turn, ctx.tool_name, ctx.scope) == (2, "probe", scope)
    assert ctx.call_id == result.tool_calls[1].call_id
    assert ctx.deadline == scope.deadline - 5  # the loop keeps the scope's grace in reserve


# ------------------------------------------------------------------ the budget


async def test_deadline_during_a_stream_cancels_it_on_the_server_and_returns_a_result(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client, deadline=1.0, grace=1) as scope:
        result = await run_agent(scope, model="slow", input="go", tools=[noop], reserve=0.5)
    assert result.reason == "deadline"
    [turn] = result.turns
    assert turn.outcome is not None
    assert turn.outcome.reason == "deadline"
    assert turn.outcome.receipt is not None
    assert turn.outcome.receipt.status == "cancelled"
    assert turn.response_id is not None
    assert emulator.ledger[turn.response_id].status == "cancelled"
    assert emulator.ledger[turn.response_id].stopped_by == "cancel"


async def test_deadline_during_a_tool_cancels_the_tool_and_leaves_no_stream_running(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["waits"] = scripted(calls("wait_forever"), ECHO)
    cancelled: list[str] = []

    async def wait_forever() -> str:
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            cancelled.append("wait_forever")
            raise
        return "unreachable"

    async with tether.open_scope(client, deadline=2.0, grace=1) as scope:
        result = await run_agent(
            scope, model="waits", input="go", tools=[wait_forever], reserve=1.0
        )
    assert result.reason == "deadline"
    assert cancelled == ["wait_forever"]
    [turn] = result.turns
    assert turn.status == "completed"
    [call] = turn.tool_calls
    assert call.cancelled
    assert call.output is None
    assert len(emulator.ledger) == 1
    no_orphans(emulator)


async def test_a_spent_budget_sends_no_request(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    async with tether.open_scope(client, deadline=1.0) as scope:
        result = await run_agent(scope, model="fast", input="go", tools=[], reserve=2.0)
    assert (result.reason, result.turns) == ("deadline", ())
    assert emulator.ledger.requests == 0


async def test_raise_on_deadline_raises_the_scopes_timeout(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    returned = False
    with pytest.raises(TimeoutError):
        async with tether.open_scope(client, deadline=1.0, grace=1) as scope:
            await run_agent(scope, model="slow", input="go", tools=[noop], raise_on_deadline=True)
            returned = True
    assert not returned
    [outcome] = scope.outcomes
    assert outcome.reason == "deadline"
    assert outcome.response_id is not None
    assert emulator.ledger[outcome.response_id].status == "cancelled"


async def test_an_enclosing_cancel_during_tools_propagates(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """A cancel that is not the budget's is never turned into a result."""
    emulator.models["cancels"] = scripted(calls("cancel_everything"), ECHO)
    returned = False
    with anyio.CancelScope() as outer:

        async def cancel_everything() -> str:
            outer.cancel()
            await anyio.sleep_forever()
            return "unreachable"

        async with tether.open_scope(client, deadline=30) as scope:
            await run_agent(scope, model="cancels", input="go", tools=[cancel_everything])
            returned = True
    assert outer.cancelled_caught
    assert not returned


async def test_scope_cancel_during_a_stream_propagates_and_cancels_on_the_server(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    returned = False
    async with tether.open_scope(client, deadline=30) as scope:

        async def cancel_when_streaming() -> None:
            await emulator.wait_for(lambda ledger: any(r.tokens_generated >= 3 for r in ledger))
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_streaming)
            await run_agent(scope, model="slow", input="go", tools=[noop])
            returned = True
    assert not returned
    [outcome] = scope.outcomes
    assert outcome.reason == "scope_cancelled"
    assert outcome.receipt is not None
    assert outcome.receipt.status == "cancelled"


# ---------------------------------------------------------- turns and tokens


async def test_max_turns_stops_without_running_the_last_turns_calls(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["always"] = scripted(calls("noop"))
    ran: list[int] = []

    async def noop(ctx: AgentContext) -> str:
        ran.append(ctx.turn)
        return "ok"

    result = await run_agent(client, model="always", input="go", tools=[noop], max_turns=3)
    assert result.reason == "max_turns"
    assert len(result.turns) == 3
    assert ran == [1, 2]
    assert result.turns[-1].tool_calls == ()


async def test_token_budget_makes_the_turn_that_reaches_it_the_last(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["always"] = scripted(calls("noop"))
    first = await run_agent(client, model="always", input="go", tools=[noop], max_tokens=1)
    assert (first.reason, len(first.turns)) == ("token_budget", 1)
    budget = first.total_tokens + 1  # the first turn costs the same again: it stays below
    result = await run_agent(client, model="always", input="go", tools=[noop], max_tokens=budget)
    assert (result.reason, len(result.turns)) == ("token_budget", 2)
    assert result.total_tokens >= budget
    assert len(result.tool_calls) == 1


async def test_an_incomplete_turn_stops_the_loop_without_running_its_calls(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["always"] = scripted(calls("noop", city="a long argument"))
    result = await run_agent(client, model="always", input="go", tools=[noop], max_output_tokens=2)
    assert result.reason == "incomplete"
    [turn] = result.turns
    assert (turn.status, turn.tool_calls) == ("incomplete", ())


# -------------------------------------------------------------------- errors


async def test_a_tool_error_is_reported_to_the_model_by_default(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["fails"] = scripted(calls("explode"), ECHO)
    raised: list[Exception] = []

    async def explode() -> str:
        raised.append(Boom("no such city"))
        raise raised[-1]

    result = await run_agent(client, model="fails", input="go", tools=[explode])
    assert result.reason == "completed"
    [call] = result.tool_calls
    assert call.error == "Boom: no such city"
    assert call.exception is raised[0]
    reported = json.dumps({"error": "Boom: no such city"})
    assert call.output == reported
    assert result.output_text.splitlines() == ["Outputs:", reported]


async def test_invalid_arguments_are_a_tool_error_and_the_tool_is_not_called(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["bad-args"] = scripted(calls("check", town=3), ECHO)
    called: list[str] = []

    async def check(city: str) -> str:
        called.append(city)
        return city

    result = await run_agent(client, model="bad-args", input="go", tools=[check])
    [call] = result.tool_calls
    assert call.error is not None
    assert call.error.startswith("ValidationError:")
    assert isinstance(call.exception, pydantic.ValidationError)
    assert called == []
    assert "city" in result.output_text


async def test_a_call_to_an_unknown_tool_is_reported(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["confused"] = scripted(calls("nope"), ECHO)
    result = await run_agent(client, model="confused", input="go", tools=[noop])
    [call] = result.tool_calls
    assert isinstance(call.exception, LookupError)
    assert "nope" in result.output_text


async def test_on_tool_error_raise_propagates_the_tools_exception_unchanged(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["fails"] = scripted(calls("explode"), ECHO)
    boom = Boom("mine")

    async def explode() -> str:
        raise boom

    with pytest.raises(Boom) as caught:
        await run_agent(client, model="fails", input="go", tools=[explode], on_tool_error="raise")
    assert caught.value is boom
    assert len(emulator.ledger) == 1


async def test_on_tool_error_stop_cancels_the_other_calls_and_says_why(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["fails"] = scripted(calls("explode", "wait_forever"), ECHO)

    async def explode() -> str:
        raise Boom("mine")

    async def wait_forever() -> str:
        await anyio.sleep_forever()
        return "unreachable"

    result = await run_agent(
        client, model="fails", input="go", tools=[explode, wait_forever], on_tool_error="stop"
    )
    assert result.reason == "tool_error"
    failed, waiting = result.tool_calls
    assert failed.error == "Boom: mine"
    assert waiting.cancelled
    assert len(emulator.ledger) == 1


# ------------------------------------------------------------- bad arguments


def _dup() -> None:
    """A second tool named like another."""


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"model": ""}, ValueError, "model"),
        ({"model": 3}, TypeError, "model"),
        ({"input": 3}, TypeError, "input"),
        ({"tools": "noop"}, TypeError, "tools"),
        ({"tools": [42]}, TypeError, "tools[0]"),
        ({"tools": [noop, agent_tool(_dup, name="noop")]}, ValueError, "'noop'"),
        ({"tools": [lambda: None]}, ValueError, "name="),
        ({"max_turns": 0}, ValueError, "max_turns"),
        ({"max_turns": True}, TypeError, "max_turns"),
        ({"max_tokens": 0}, ValueError, "max_tokens"),
        ({"on_tool_error": "ignore"}, ValueError, "on_tool_error"),
        ({"reserve": -1}, ValueError, "reserve"),
        ({"stream": True}, ValueError, "stream"),
        ({"store": False}, ValueError, "store=False"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout"),
    ],
)
async def test_bad_arguments_fail_before_any_request(
    emulator: ResponsesEmulator,
    client: openai.AsyncOpenAI,
    kwargs: dict[str, Any],
    error: type[Exception],
    names: str,
) -> None:
    arguments: dict[str, Any] = {"model": "fast", "input": "go", "tools": [noop], **kwargs}
    with pytest.raises(error, match=names.replace("[", r"\[").replace("]", r"\]")):
        await run_agent(client, **arguments)
    assert emulator.ledger.requests == 0


async def test_a_sync_client_is_refused(emulator: ResponsesEmulator) -> None:
    with emulator.client() as sync_client, pytest.raises(TypeError, match=r"tether\.sync"):
        await run_agent(sync_client, model="fast", input="go", tools=[noop])  # type: ignore[arg-type]
    assert emulator.ledger.requests == 0


# ------------------------------------------------------------------- schemas


class Place(pydantic.BaseModel):
    city: str
    country: str


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    async def forecast(
        place: Place,
        days: Annotated[int, pydantic.Field(ge=1, le=7)],
        units: Literal["C", "F"] | None,
        ctx: AgentContext,
    ) -> str:
        """Forecast the weather.

        Args:
            place: Where.
            days: How many days ahead.
        """
        return ""

    described = agent_tool(forecast)
    assert described.param == {
        "type": "function",
        "name": "forecast",
        "description": "Forecast the weather.",
        "strict": True,
        "parameters": {
            "$defs": {
                "Place": {
                    "additionalProperties": False,
                    "properties": {
                        "city": {"title": "City", "type": "string"},
                        "country": {"title": "Country", "type": "string"},
                    },
                    "required": ["city", "country"],
                    "title": "Place",
                    "type": "object",
                }
            },
            "additionalProperties": False,
            "properties": {
                "place": {"$ref": "#/$defs/Place", "description": "Where."},
                "days": {
                    "description": "How many days ahead.",
                    "maximum": 7,
                    "minimum": 1,
                    "title": "Days",
                    "type": "integer",
                },
                "units": {
                    "anyOf": [{"enum": ["C", "F"], "type": "string"}, {"type": "null"}],
                    "title": "Units",
                },
            },
            "required": ["place", "days", "units"],
            "title": "forecast",
            "type": "object",
        },
    }


def test_a_parameter_with_a_default_makes_the_tool_non_strict() -> None:
    def search(query: str, limit: int = 10) -> list[str]:
        return []

    described = agent_tool(search)
    assert described.strict is False
    assert described.parameters["required"] == ["query"]
    assert described.parameters["properties"]["limit"]["default"] == 10
    with pytest.raises(ValueError, match=r"cannot be strict.*\['limit'\]"):
        agent_tool(search, strict=True)


def test_a_described_tool_is_still_the_function() -> None:
    assert to_fahrenheit(100) == 212
    assert to_fahrenheit.__name__ == "to_fahrenheit"
    assert agent_tool(to_fahrenheit) is to_fahrenheit
    assert agent_tool(name="convert")(to_fahrenheit).name == "convert"


def test_args_and_kwargs_cannot_be_described() -> None:
    def anything(*args: int) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):
        agent_tool(anything)


# ------------------------------------------------- Ctrl-C and sys.exit() in a tool


# On asyncio a KeyboardInterrupt or SystemExit in any task stops the event loop itself
# (asyncio re-raises them out of the loop), so these are trio's: there a task group wraps them.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_keyboard_interrupt_in_a_tool_propagates_as_itself(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    """Regression: on trio a tool's KeyboardInterrupt came out wrapped in a group."""
    emulator.models["ctrl-c"] = scripted(calls("interrupt"), ECHO)

    async def interrupt() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await run_agent(client, model="ctrl-c", input="go", tools=[interrupt])


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_sys_exit_in_a_tool_keeps_its_exit_code(
    emulator: ResponsesEmulator, client: openai.AsyncOpenAI
) -> None:
    emulator.models["exit"] = scripted(calls("leave"), ECHO)

    async def leave() -> str:
        raise SystemExit(3)

    with pytest.raises(SystemExit) as caught:
        await run_agent(client, model="exit", input="go", tools=[leave])
    assert caught.value.code == 3
