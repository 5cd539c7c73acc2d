"""An agent with a 30-second budget: a function-calling loop that cannot outlive its deadline.

    python examples/agent_budget.py                      # the emulator (offline)
    OPENAI_API_KEY=sk-... python examples/agent_budget.py  # the real API
    python examples/agent_budget.py --deadline 3 --slow   # watch the budget run out

The whole loop (every streamed turn and every tool call) runs under one scope's deadline.
When it runs out, the live response is cancelled on the server, running tools are
cancelled, and `run_agent` returns a result that says so: nothing is left running.
Without OPENAI_API_KEY, a local Responses emulator plays the model with a scripted
conversation (weather, then a unit conversion, then the answer).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import TYPE_CHECKING, Literal

import anyio
import openai

import tether

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

MODEL = os.environ.get("TETHER_MODEL", "gpt-5-mini")
QUESTION = "What is the weather in Paris right now, in Fahrenheit?"
SLOW_TOOLS = False  # --slow: the weather service takes a minute to answer


@tether.agent_tool
async def get_weather(city: str, ctx: tether.agents.AgentContext) -> dict[str, object]:
    """The current weather in a city, in Celsius.

    Args:
        city: The city name, e.g. "Paris".
    """
    print(f"  [tool] get_weather({city!r}): {ctx.remaining():.1f}s left in the budget")
    try:
        await anyio.sleep(60 if SLOW_TOOLS else 0.2)  # a real tool would call a weather API
    except anyio.get_cancelled_exc_class():
        print("  [tool] get_weather was cancelled: the budget ran out")
        raise
    return {"city": city, "celsius": 18, "sky": "cloudy"}


@tether.agent_tool
def convert_temperature(celsius: float, to: Literal["F", "K"]) -> float:
    """Convert a temperature from Celsius to Fahrenheit (F) or Kelvin (K).

    Args:
        celsius: The temperature in Celsius.
        to: The unit to convert to.
    """
    return round(celsius * 9 / 5 + 32, 1) if to == "F" else celsius + 273.15


@contextlib.asynccontextmanager
async def make_client() -> AsyncIterator[openai.AsyncOpenAI]:
    """The real API when OPENAI_API_KEY is set; otherwise the emulator with a scripted model."""
    if os.environ.get("OPENAI_API_KEY"):
        print(f"Using the OpenAI API, model {MODEL}")
        async with openai.AsyncOpenAI() as client:
            yield client
        return
    from tether.testing import EmulatedModel, FunctionCall, ResponsesEmulator, Turn

    scripted = EmulatedModel(
        ttft=0.3,
        tokens_per_s=40.0,
        script=[
            Turn(calls=[FunctionCall(name="get_weather", arguments={"city": "Paris"})]),
            Turn(
                calls=[
                    FunctionCall(name="convert_temperature", arguments={"celsius": 18, "to": "F"})
                ]
            ),
            Turn(text="It is cloudy in Paris, at 18 °C, that is (in °F):", echo_outputs=True),
        ],
    )
    print("No OPENAI_API_KEY: using the local Responses emulator with a scripted model")
    async with ResponsesEmulator(models={MODEL: scripted}) as emu:
        async with emu.async_client() as client:
            yield client


async def main(deadline: float) -> None:
    async with make_client() as client:
        async with tether.open_scope(client, deadline=deadline, grace=2) as scope:
            result = await tether.run_agent(
                scope,
                model=MODEL,
                input=QUESTION,
                instructions="Use the tools. Answer in one short sentence.",
                tools=[get_weather, convert_temperature],
                max_turns=6,
            )
            left = scope.remaining()
    print()
    for turn in result.turns:
        reason = turn.outcome.reason if turn.outcome else "-"
        print(f"turn {turn.index}: {turn.status} ({reason}), response {turn.response_id}")
        for call in turn.tool_calls:
            what = "cancelled" if call.cancelled else (call.error or call.output)
            print(f"    {call.name}({call.arguments}) -> {what}  [{call.duration:.2f}s]")
        if turn.outcome and turn.outcome.receipt:
            print(f"    cancelled on the server: {turn.outcome.receipt.status}")
    print(f"\nstopped by: {result.reason}, {result.total_tokens} tokens, {left:.1f}s to spare")
    if result.reason == "completed":
        print(f"answer: {result.output_text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=30.0, help="the budget, in seconds")
    parser.add_argument("--slow", action="store_true", help="make the weather tool take a minute")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    SLOW_TOOLS = args.slow
    anyio.run(main, args.deadline, backend=args.backend)
