"""The emulator's ASGI app: the Responses endpoints, on Starlette.

Every handler runs on the server thread's event loop. Generation tasks live in a task
group owned by the app's lifespan; connections only read the event log of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from ._ledger import Ledger, ResponseRecord
from ._models import split_tokens
from ._run import Call, Run, generate
from ._wire import (
    add_obfuscation,
    deleted_object,
    error_body,
    input_item_list,
    request_echo,
    strip_obfuscation,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._hold import Gate
    from ._models import EmulatedModel

__all__ = ["EmulatorApp"]

_JSON = "application/json"
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_ABANDONED_AFTER = 2.0
"""On HTTP/2, seconds a stream may stay blocked (its client reads nothing, its flow-control
window is shut) after its response ended, before the server resets it. A client's HTTP
stack may never send RST_STREAM for a stream it closed early (httpcore's h2 does not):
such a stream would keep its slot for good, and after 100 the connection takes no more."""


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status, media_type=_JSON)


def _error(status: int, message: str | None = None, **kw: Any) -> Response:
    return Response(error_body(status, message, **kw), status, media_type=_JSON)


def _count_input_tokens(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_count_input_tokens(item) for item in value)  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return _count_input_tokens(value.get("content", value.get("text", value.get("output", ""))))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    return 0


def _output_text(output: Any) -> str:
    """The text of a `function_call_output`'s output: a string, or a list of content parts."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(
            str(part.get("text", ""))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            for part in output  # pyright: ignore[reportUnknownVariableType]
            if isinstance(part, dict)
        )
    return json.dumps(output)


def _bool_param(value: str | None) -> bool | None:
    return None if value is None else value.lower() == "true"


def _include_obfuscation(body: dict[str, Any]) -> bool:
    options: Any = body.get("stream_options")
    if isinstance(options, dict):
        return options.get("include_obfuscation", True) is not False  # pyright: ignore[reportUnknownMemberType]
    return True


def _item_resources(body: dict[str, Any], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    """The request's input as `GET /v1/responses/{id}/input_items` lists it (`ItemResource`s)."""
    value: Any = body.get("input")
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    resources: list[dict[str, Any]] = []
    for raw in value:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(raw, dict):
            continue
        item: dict[str, Any] = dict(raw)  # pyright: ignore[reportUnknownArgumentType]
        kind = item.setdefault("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            content = item.get("content")
            if isinstance(content, str):
                part: dict[str, Any] = {"type": "input_text", "text": content}
                if role == "assistant":
                    part = {
                        "type": "output_text",
                        "text": content,
                        "annotations": [],
                        "logprobs": [],
                    }
                content = [part]
            item["content"] = content if isinstance(content, list) else []
            item["role"] = role
        prefix = {"message": "msg", "function_call": "fc"}.get(kind, "item")
        item.setdefault("id", new_id(prefix))
        item.setdefault("status", "completed")
        resources.append(item)
    return resources


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    items: Any = body.get("input")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]  # pyright: ignore[reportUnknownVariableType]


def _not_found(response_id: str) -> Response:
    return _error(404, f"No response found with id '{response_id}'.", param="response_id")


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EmulatorApp:
    """The Starlette app and the server-side state behind it (internal)."""

    def __init__(
        self,
        *,
        models: Mapping[str, EmulatedModel],
        ledger: Ledger,
        seed: int,
        keepalive_every: float | None,
        gates: Mapping[str, Gate],
        on_ready: Callable[[asyncio.AbstractEventLoop], None],
        usage_on_cancel: bool = False,
        api_key: Callable[[], str | None] = lambda: None,
    ) -> None:
        # Ids of requests and input items come from RNGs of their own: the response, message
        # and call ids stay what they were before these existed.
        self.models = models
        self.ledger = ledger
        self.seed = seed
        self.keepalive_every = keepalive_every
        self.created_gate = gates["created"]
        self.cancel_gate = gates["cancel"]
        self._on_ready = on_ready
        self.usage_on_cancel = usage_on_cancel
        self.api_key = api_key
        self._ids = random.Random(f"ids:{seed}")
        self._request_ids = random.Random(f"requests:{seed}")
        self._item_ids = random.Random(f"items:{seed}")
        self._create_counts: dict[str, int] = {}
        self._response_counts: dict[str, int] = {}
        self._runs: dict[str, Run] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.closing = asyncio.Event()
        routes = [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/responses/{response_id}/input_items", self.input_items, methods=["GET"]),
        ]
        self.starlette = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        request_id = f"req_{self._request_ids.getrandbits(128):032x}"
        scope["tether.request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_request_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        key = self.api_key()
        if key is not None and (b"authorization", f"Bearer {key}".encode()) not in scope["headers"]:
            refused = _error(
                401,
                "Incorrect API key provided (emulated Responses API).",
                code="invalid_api_key",
            )
            await refused(scope, receive, send_with_request_id)
            return
        await self.starlette(scope, receive, send_with_request_id)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncGenerator[None, None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._on_ready(asyncio.get_running_loop())
            yield
            self.close()

    def close(self) -> None:
        """Stop every run and let every parked request go (the server is stopping)."""
        self.closing.set()
        self.created_gate.open_for_good()
        self.cancel_gate.open_for_good()
        for run in list(self._runs.values()):
            run.shutdown()

    async def _not_found(self, _request: Request, _exc: Exception) -> Response:
        return _error(404, "Not found (emulated Responses API).")

    async def _not_allowed(self, _request: Request, _exc: Exception) -> Response:
        return _error(405, "Method not allowed (emulated Responses API).")

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._ids.getrandbits(192):048x}"

    def _new_item_id(self, prefix: str) -> str:
        return f"{prefix}_{self._item_ids.getrandbits(192):048x}"

    def _lookup(self, response_id: str) -> Run | None:
        """The run of a response the API can find: stored (`store` not false), not deleted."""
        run = self._runs.get(response_id)
        if run is None or not run.record.store or run.record.deleted:
            return None
        return run

    # --- POST /v1/responses -----------------------------------------------------------

    async def create(self, request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # closed before its whole body: not a request, nobody to answer
            return Response(status_code=400)
        self.ledger._request()  # pyright: ignore[reportPrivateUsage]
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        body_: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
        model_name = body_.get("model")
        prompt = body_.get("prompt")
        if model_name is None and prompt is not None:
            # A stored prompt carries its model: the emulator's first model stands in for it.
            model_name = next(iter(self.models), None)
        if not isinstance(model_name, str):
            return _error(400, "Missing required parameter: 'model'.", param="model")
        if "input" not in body_ and prompt is None:
            return _error(400, "Missing required parameter: 'input'.", param="input")
        model = self.models.get(model_name)
        if model is None:
            message = f"The model `{model_name}` does not exist or you do not have access to it."
            return _error(400, message, param="model", code="model_not_found")
        max_output_tokens = body_.get("max_output_tokens")
        if max_output_tokens is not None and (
            not isinstance(max_output_tokens, int) or max_output_tokens < 1
        ):
            return _error(400, "Invalid 'max_output_tokens'.", param="max_output_tokens")

        follow_up = self._follow_up(body_)
        if isinstance(follow_up, Response):
            return follow_up

        faults = model.faults
        attempt = self._create_counts.get(model_name, 0)
        self._create_counts[model_name] = attempt + 1
        if attempt < len(faults.fail_before_stream):
            return _error(faults.fail_before_stream[attempt])

        hops, outputs = follow_up
        run = self._start(model_name, model, body_, max_output_tokens, hops, outputs)
        run.record.request_id = request.scope.get("tether.request_id", "")
        record = run.record
        if record.stream:
            return _EventStream(self, run, cursor=0)
        if record.background:
            await self._first(run.created.wait())
            return _json(run.created_response or run.snapshot())
        record.listeners += 1
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await _until_disconnected(request.receive)
                    run.stop("disconnect")

                tg.start_soon(watch)
                await run.ended_event.wait()
                tg.cancel_scope.cancel()
        finally:
            record.listeners -= 1
            self.ledger._changed()  # pyright: ignore[reportPrivateUsage]
        return _json(run.snapshot())

    def _follow_up(self, body: dict[str, Any]) -> tuple[int, list[str]] | Response:
        """Check the function call outputs of a request, as the API does.

        Every function call of the previous response (and every `function_call` item in the
        input) needs a `function_call_output` with its `call_id`, and every output needs a
        call: 400 otherwise. Returns the number of `previous_response_id` hops from the start
        of the conversation, and the outputs, in input order.
        """
        previous_id = body.get("previous_response_id")
        previous: Run | None = None
        if previous_id is not None:
            previous = self._lookup(previous_id) if isinstance(previous_id, str) else None
            if previous is None:
                message = f"Previous response with id '{previous_id}' not found."
                return _error(400, message, param="previous_response_id")
        items = _input_items(body)
        pending = [] if previous is None else [c.call_id for c in previous.calls if c.done]
        pending += [item.get("call_id") for item in items if item.get("type") == "function_call"]
        outputs: list[str] = []
        answered: set[Any] = set()
        for item in items:
            if item.get("type") != "function_call_output":
                continue
            call_id = item.get("call_id")
            if call_id not in pending:
                message = f"No tool call found for function call output with call_id {call_id}."
                return _error(400, message, param="input")
            answered.add(call_id)
            outputs.append(_output_text(item.get("output")))
        for call_id in pending:
            if call_id not in answered:
                return _error(
                    400, f"No tool output found for function call {call_id}.", param="input"
                )
        return (0 if previous is None else previous.hops + 1), outputs

    def _start(
        self,
        model_name: str,
        model: EmulatedModel,
        body: dict[str, Any],
        max_output_tokens: int | None,
        hops: int = 0,
        outputs: list[str] | None = None,
    ) -> Run:
        index = self._response_counts.get(model_name, 0)
        self._response_counts[model_name] = index + 1
        rng = random.Random(f"{self.seed}:{model_name}:{index}")
        record = ResponseRecord(
            id=self._new_id("resp"),
            model=model_name,
            background=bool(body.get("background")),
            stream=bool(body.get("stream")),
            store=body.get("store") is not False,
        )
        keepalive = model.faults.keepalive_every
        turn = model.turn(hops)
        scripted_calls = () if turn is None else turn.calls
        text = None if turn is None else turn.message(outputs or [])
        if text is not None:
            tokens = split_tokens(text)
        elif scripted_calls:
            tokens = []
        else:
            tokens = model.tokens(rng)
        run = Run(
            record=record,
            model=model,
            tokens=tokens,
            first_token_delay=model.first_token_delay(rng),
            max_output_tokens=max_output_tokens,
            echo=request_echo(body),
            input_tokens=max(1, _count_input_tokens(body.get("input"))),
            msg_id=self._new_id("msg"),
            # after msg_id: ids drawn in the same order as before scripts existed
            calls=[
                Call(item_id=self._new_id("fc"), call_id=self._new_id("call"), call=call)
                for call in scripted_calls
            ],
            ledger=self.ledger,
            keepalive_every=self.keepalive_every if keepalive is None else keepalive,
            hops=hops,
            usage_on_cancel=self.usage_on_cancel,
            obfuscate=_include_obfuscation(body),
            input_items=_item_resources(body, self._new_item_id),
        )
        self._runs[record.id] = run
        self.ledger._add(record)  # pyright: ignore[reportPrivateUsage]
        assert self._tg is not None
        if self.closing.is_set():
            run.shutdown()
        else:
            self._tg.start_soon(generate, run, self.created_gate)
        return run

    async def _first(self, awaitable: Any) -> bool:
        """Await `awaitable`; return False if the server started closing first."""
        result = True
        async with anyio.create_task_group() as tg:

            async def on_close() -> None:
                nonlocal result
                await self.closing.wait()
                result = False
                tg.cancel_scope.cancel()

            tg.start_soon(on_close)
            await awaitable
            tg.cancel_scope.cancel()
        return result

    # --- GET /v1/responses/{id} -------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        run = self._lookup(response_id)
        if run is None:
            return _not_found(response_id)
        params = request.query_params
        if params.get("stream", "false").lower() != "true":
            return _json(run.snapshot())
        try:
            starting_after = int(params.get("starting_after", "-1"))
        except ValueError:
            return _error(
                400, "Invalid 'starting_after': expected an integer.", param="starting_after"
            )
        obfuscate = _bool_param(params.get("include_obfuscation"))
        return _EventStream(self, run, cursor=max(0, starting_after + 1), obfuscate=obfuscate)

    # --- DELETE /v1/responses/{id} ----------------------------------------------------

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        run = self._lookup(response_id)
        if run is None:
            return _not_found(response_id)
        run.record.deleted = True
        self.ledger._changed()  # pyright: ignore[reportPrivateUsage]
        return _json(deleted_object(response_id))

    # --- GET /v1/responses/{id}/input_items -------------------------------------------

    async def input_items(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        run = self._lookup(response_id)
        if run is None:
            return _not_found(response_id)
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            message = (
                f"Invalid 'limit': expected an integer from 1 to 100, got {params.get('limit')!r}."
            )
            return _error(400, message, param="limit")
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            return _error(
                400, f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", param="order"
            )
        items = run.input_items if order == "asc" else run.input_items[::-1]
        after = params.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                return _error(404, f"No input item found with id '{after}'.", param="after")
            items = items[ids.index(after) + 1 :]
        return _json(input_item_list(items[:limit], has_more=len(items) > limit))

    # --- POST /v1/responses/{id}/cancel -----------------------------------------------

    async def cancel(self, request: Request) -> Response:
        ledger = self.ledger
        ledger._cancel_started()  # pyright: ignore[reportPrivateUsage]
        try:
            response_id = request.path_params["response_id"]
            run = self._lookup(response_id)
            if run is not None:
                record = run.record
                record.cancel_calls += 1
                record.cancel_headers = {k.lower(): v for k, v in request.headers.items()}
                if record.cancel_requested_at is None:
                    record.cancel_requested_at = time.monotonic()
            if self.cancel_gate.held:
                await self._first(self.cancel_gate.wait())
            if run is None:
                return _not_found(response_id)
            response = await self._cancel(request, run)
            if response is None:  # the client gave up on a hanging cancel: nothing answered
                return _error(503, "The cancel request was abandoned.")
            run.record.cancel_statuses.append(response.status_code)
            return response
        finally:
            ledger._cancel_finished()  # pyright: ignore[reportPrivateUsage]

    async def _cancel(self, request: Request, run: Run) -> Response | None:
        record = run.record
        faults = run.model.faults
        if not record.background:
            return _error(400, "Only responses created with background=true can be cancelled.")
        if faults.cancel_hangs:
            if await self._first(_until_disconnected(request.receive)):
                return None
            return _error(503, "The emulator stopped while a cancel was hanging.")
        if faults.cancel_delay:
            await anyio.sleep(faults.cancel_delay)
        if record.cancel_calls <= faults.cancel_failures:
            return _error(500)
        if record.status == "cancelled":
            return _json(run.snapshot())
        if not record.generating:
            return _error(400, f"Cannot cancel a {record.status} response.")
        if record.cancel_reported_status is None:
            record.cancel_reported_status = "cancelled"
        extra = faults.cancel_best_effort
        if extra is not None and (extra or faults.cancel_best_effort_status == "completed"):
            # Best effort: answered cancelled, but it goes on (see Faults.cancel_best_effort).
            if run.best_effort_stop is None:
                run.best_effort_stop = record.tokens_generated + extra
            self.ledger._changed()  # pyright: ignore[reportPrivateUsage]
            return _json(run.snapshot("cancelled"))
        run.stop("cancel")
        return _json(run.snapshot())


class _EventStream(Response):
    """An SSE response that follows a run's event log from `cursor` until it ends."""

    def __init__(
        self, app: EmulatorApp, run: Run, cursor: int, obfuscate: bool | None = None
    ) -> None:
        super().__init__(status_code=200)
        self._app = app
        self._run = run
        self._cursor = cursor
        self._first = run.connections == 0
        run.connections += 1
        # None: send the log as stored; else add or strip `obfuscation` where it differs.
        self._obfuscate = None if obfuscate is None or obfuscate == run.obfuscate else obfuscate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self._run
        record = run.record
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        record.listeners += 1
        run.ledger._changed()  # pyright: ignore[reportPrivateUsage]
        finished = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, receive, tg.cancel_scope)
                if scope.get("http_version") == "2":
                    tg.start_soon(self._watch_abandoned, tg.cancel_scope)
                if not await self._pump(send):
                    # The end of the body, under the watchers too: on HTTP/2 it waits until
                    # the client has read everything, which an abandoned stream never does.
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    finished = True
                tg.cancel_scope.cancel()
        finally:
            record.listeners -= 1
            if not finished and not record.background and record.listeners == 0:
                run.stop("disconnect")
            run.ledger._changed()  # pyright: ignore[reportPrivateUsage]
        # Unfinished (cut, disconnected, abandoned): return without finishing the body.
        # uvicorn closes the HTTP/1.1 connection, and the client sees an incomplete
        # message; on HTTP/2 hypercorn resets the stream (see _h2.py).

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        await _until_disconnected(receive)
        scope.cancel()

    async def _watch_abandoned(self, scope: anyio.CancelScope) -> None:
        """HTTP/2: reset the stream if it is still blocked a while after its response ended.

        A client that closed the stream without RST_STREAM (httpcore's h2 never sends
        one) reads nothing more: once its flow-control window is full, the stream would
        stay open for good, its slot taken, and the connection refuses new streams after
        100 of them. Returning without finishing the body makes hypercorn reset it.
        """
        await self._run.ended_event.wait()
        await anyio.sleep(_ABANDONED_AFTER)
        scope.cancel()

    def _chunk(self, frames: list[bytes], start: int, end: int) -> bytes:
        if self._obfuscate is None:
            return frames[start] if end - start == 1 else b"".join(frames[start:end])
        if self._obfuscate:
            return b"".join(add_obfuscation(frame) for frame in frames[start:end])
        return strip_obfuscation(b"".join(frames[start:end]))

    async def _pump(self, send: Send) -> bool:
        """Send the log from the cursor on; True if the connection must be cut."""
        run = self._run
        frames = run.record.frames
        closing = self._app.closing
        drop_after = run.model.faults.drop_after if self._first else None
        sent = 0
        cursor = self._cursor
        while True:
            end = len(frames)
            if cursor < end:
                if drop_after is not None and sent + end - cursor >= drop_after:
                    chunk = self._chunk(frames, cursor, cursor + drop_after - sent)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    return True
                chunk = self._chunk(frames, cursor, end)
                sent += end - cursor
                cursor = end
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                continue
            if run.ended or closing.is_set():
                return False
            await run.wait_changed()
