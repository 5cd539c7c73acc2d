"""The emulator's ASGI app: the Responses endpoints, on Starlette.

Every handler runs on the server thread's event loop. Generation tasks live in a task
group owned by the app's lifespan; connections only read the event log of a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from ._event_stream import EventStream, until_disconnected
from ._generate import generate
from ._ledger import Ledger
from ._models import split_tokens
from ._request_body import (
    bool_param,
    count_input_tokens,
    create_request,
    error_response,
    follow_up,
    include_obfuscation,
    item_resources,
    json_response,
    not_found,
)
from ._run import Call, Run
from ._wire import deleted_object, input_item_list, request_echo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Mapping

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._book import LedgerBook
    from ._hold import Gate
    from ._models import EmulatedModel

__all__ = ["EmulatorApp"]


class EmulatorApp:
    """The Starlette app and the server-side state behind it (internal)."""

    def __init__(
        self,
        *,
        models: Mapping[str, EmulatedModel],
        book: LedgerBook,
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
        self.book = book
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
            refused = error_response(
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
        return error_response(404, "Not found (emulated Responses API).")

    async def _not_allowed(self, _request: Request, _exc: Exception) -> Response:
        return error_response(405, "Method not allowed (emulated Responses API).")

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
        self.book.request()
        parsed = create_request(raw, self.models)
        if isinstance(parsed, Response):
            return parsed
        body_, model_name, model, max_output_tokens = parsed
        follow_up_ = follow_up(body_, self._lookup)
        if isinstance(follow_up_, Response):
            return follow_up_

        faults = model.faults
        attempt = self._create_counts.get(model_name, 0)
        self._create_counts[model_name] = attempt + 1
        if attempt < len(faults.fail_before_stream):
            return error_response(faults.fail_before_stream[attempt])

        hops, outputs = follow_up_
        run = self._start(model_name, model, body_, max_output_tokens, hops, outputs)
        run.record.request_id = request.scope.get("tether.request_id", "")
        record = run.record
        if record.stream:
            return EventStream(self.closing, run, cursor=0)
        if record.background:
            await self._first(run.created.wait())
            return json_response(run.created_response or run.snapshot())
        record.listeners += 1
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    await until_disconnected(request.receive)
                    run.stop("disconnect")

                tg.start_soon(watch)
                await run.ended_event.wait()
                tg.cancel_scope.cancel()
        finally:
            record.listeners -= 1
            self.book.changed()
        return json_response(run.snapshot())

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
        record = Ledger.Record(
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
            input_tokens=max(1, count_input_tokens(body.get("input"))),
            msg_id=self._new_id("msg"),
            # after msg_id: ids drawn in the same order as before scripts existed
            calls=[
                Call(item_id=self._new_id("fc"), call_id=self._new_id("call"), call=call)
                for call in scripted_calls
            ],
            book=self.book,
            keepalive_every=self.keepalive_every if keepalive is None else keepalive,
            hops=hops,
            usage_on_cancel=self.usage_on_cancel,
            obfuscate=include_obfuscation(body),
            input_items=item_resources(body, self._new_item_id),
        )
        self._runs[record.id] = run
        self.book.add(record)
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
            return not_found(response_id)
        params = request.query_params
        if params.get("stream", "false").lower() != "true":
            return json_response(run.snapshot())
        try:
            starting_after = int(params.get("starting_after", "-1"))
        except ValueError:
            return error_response(
                400, "Invalid 'starting_after': expected an integer.", param="starting_after"
            )
        obfuscate = bool_param(params.get("include_obfuscation"))
        return EventStream(
            self.closing, run, cursor=max(0, starting_after + 1), obfuscate=obfuscate
        )

    # --- DELETE /v1/responses/{id} ----------------------------------------------------

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        run = self._lookup(response_id)
        if run is None:
            return not_found(response_id)
        run.record.deleted = True
        self.book.changed()
        return json_response(deleted_object(response_id))

    # --- GET /v1/responses/{id}/input_items -------------------------------------------

    async def input_items(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        run = self._lookup(response_id)
        if run is None:
            return not_found(response_id)
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            message = (
                f"Invalid 'limit': expected an integer from 1 to 100, got {params.get('limit')!r}."
            )
            return error_response(400, message, param="limit")
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            return error_response(
                400, f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", param="order"
            )
        items = run.input_items if order == "asc" else run.input_items[::-1]
        after = params.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                return error_response(404, f"No input item found with id '{after}'.", param="after")
            items = items[ids.index(after) + 1 :]
        return json_response(input_item_list(items[:limit], has_more=len(items) > limit))

    # --- POST /v1/responses/{id}/cancel -----------------------------------------------

    async def cancel(self, request: Request) -> Response:
        book = self.book
        book.cancel_started()
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
                return not_found(response_id)
            response = await self._cancel(request, run)
            if response is None:  # the client gave up on a hanging cancel: nothing answered
                return error_response(503, "The cancel request was abandoned.")
            run.record.cancel_statuses.append(response.status_code)
            return response
        finally:
            book.cancel_finished()

    async def _cancel(self, request: Request, run: Run) -> Response | None:
        record = run.record
        faults = run.model.faults
        if not record.background:
            return error_response(
                400, "Only responses created with background=true can be cancelled."
            )
        if faults.cancel_hangs:
            if await self._first(until_disconnected(request.receive)):
                return None
            return error_response(503, "The emulator stopped while a cancel was hanging.")
        if faults.cancel_delay:
            await anyio.sleep(faults.cancel_delay)
        if record.cancel_calls <= faults.cancel_failures:
            return error_response(500)
        if record.status == "cancelled":
            return json_response(run.snapshot())
        if not record.generating:
            return error_response(400, f"Cannot cancel a {record.status} response.")
        if record.cancel_reported_status is None:
            record.cancel_reported_status = "cancelled"
        extra = faults.cancel_best_effort
        if extra is not None and (extra or faults.cancel_best_effort_status == "completed"):
            # Best effort: answered cancelled, but it goes on (see Faults.cancel_best_effort).
            if run.best_effort_stop is None:
                run.best_effort_stop = record.tokens_generated + extra
            self.book.changed()
            return json_response(run.snapshot("cancelled"))
        run.stop("cancel")
        return json_response(run.snapshot())
