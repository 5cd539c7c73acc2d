"""A web chat that streams a model's answer to the browser, with a Stop button that stops it.

    python examples/web_chat/app.py                      # on the emulator (offline), port 8001
    OPENAI_API_KEY=sk-... python examples/web_chat/app.py --real --model gpt-5-mini

Open http://127.0.0.1:8001, ask something, click Stop (or close the tab). Either way the
response is stopped **on the server**, not just no longer read:

- **Stop** posts to ``/chat/{response_id}/stop``; the handler calls ``stream.cancel()`` on
  the guarded stream that the ``/chat`` request is reading (from another task: that is
  what ``cancel()`` is made for). The reading loop ends, the server-side cancel is
  confirmed, and the page gets the receipt as the stream's last event.
- **Closing the tab** (or a lost connection) disconnects the SSE request. The response
  watches for ``http.disconnect`` in a task group next to the reader and cancels the
  group's scope: the guarded stream is left by a cancellation, so tether closes the
  model's stream and cancels it on the server (under a bounded shield) before the
  request's task ends.

Needs starlette and uvicorn (``pip install "tether[testing]"``: the emulator ships with them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import openai
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

import tether

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from typing import TypeAlias

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    SendEvent: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[None]]
    """Sends one server-sent event: its name and its JSON data."""

PAGE = Path(__file__).with_name("index.html")
GRACE = 5.0
"""Seconds each server-side cancel may take (tether's bound on every stop path)."""


# --8<-- [start:events]
class EventStream:
    """An SSE response whose writer is cancelled as soon as the client disconnects.

    The writer and a watcher of ``http.disconnect`` run in one task group: whichever ends
    first cancels the other. A disconnect therefore arrives in the writer as a
    cancellation, the one signal a guarded stream turns into a server-side cancel.
    """

    def __init__(self, write: Callable[[SendEvent], Awaitable[None]]) -> None:
        self._write = write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )

        async def send_event(event: str, data: dict[str, Any]) -> None:
            body = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})

        disconnected = False
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                nonlocal disconnected
                while (await receive())["type"] != "http.disconnect":
                    pass
                disconnected = True
                tg.cancel_scope.cancel()  # the writer sees a cancellation: tether stops the model

            tg.start_soon(watch_disconnect)
            await self._write(send_event)
            tg.cancel_scope.cancel()  # written: stop watching
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


# --8<-- [end:events]


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE.read_text("utf-8"))


# --8<-- [start:handlers]
async def chat(request: Request) -> EventStream:
    """``GET /chat?prompt=...``: the answer as server-sent events (start, delta..., end)."""
    state = request.app.state
    prompt = request.query_params.get("prompt", "").strip() or "Tell me a story."

    async def write(send_event: SendEvent) -> None:
        async with tether.guarded_stream(
            state.client, model=state.model, input=prompt, grace=GRACE
        ) as stream:
            state.chats[stream.response_id] = stream  # so that Stop can find it
            try:
                await send_event("start", {"id": stream.response_id})
                async for text in stream.text_deltas():
                    await send_event("delta", {"text": text})
            finally:
                del state.chats[stream.response_id]
        outcome = stream.outcome
        receipt = outcome.receipt
        status = receipt.status if receipt is not None else outcome.status
        await send_event("end", {"reason": outcome.reason, "status": status})

    return EventStream(write)


async def stop(request: Request) -> JSONResponse:
    """``POST /chat/{id}/stop``: cancel that answer on the server; answers with the receipt."""
    stream = request.app.state.chats.get(request.path_params["response_id"])
    if stream is None:
        return JSONResponse({"error": "no such answer streaming"}, status_code=404)
    receipt = await stream.cancel()  # the /chat request's reading loop ends
    return JSONResponse({"status": receipt.status, "attempts": receipt.attempts})


# --8<-- [end:handlers]


def create_app(
    make_client: Callable[[], contextlib.AbstractAsyncContextManager[openai.AsyncOpenAI]],
    *,
    model: str,
) -> Starlette:
    """The app: ``make_client()`` opens the ``AsyncOpenAI`` it uses, for its lifetime.

    Example:
        ```python
        app = create_app(lambda: openai.AsyncOpenAI(), model="gpt-5-mini")
        ```
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None]:
        async with make_client() as client:
            app.state.client = client
            app.state.model = model
            app.state.chats = {}
            yield

    return Starlette(
        routes=[
            Route("/", page),
            Route("/chat", chat),
            Route("/chat/{response_id}/stop", stop, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


STORYTELLER = "storyteller"
"""The emulator's model: a long answer at a reading pace, so that there is time to click Stop."""


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description="A web chat with a Stop button that stops the model on the server."
    )
    parser.add_argument("--real", action="store_true",
                        help="use the OpenAI API (OPENAI_API_KEY) instead of the emulator")  # fmt: skip
    parser.add_argument("--model", default=os.environ.get("TETHER_MODEL", "gpt-5-mini"),
                        help="the model, with --real (default gpt-5-mini)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8001, help="the port (default 8001)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.real:
            app = create_app(openai.AsyncOpenAI, model=args.model)
        else:
            from tether.testing import EmulatedModel, ResponsesEmulator

            models = {STORYTELLER: EmulatedModel(ttft=0.3, tokens_per_s=15.0, length=600)}
            emu = stack.enter_context(ResponsesEmulator(models=models))
            app = create_app(emu.async_client, model=STORYTELLER)
            print(f"on the Responses emulator ({emu.base_url}); --real for the OpenAI API")
        uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
