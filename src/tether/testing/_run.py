"""One response on the emulated server: its event log, and the task that generates it.

Runs on the server thread's event loop only. The generation task appends SSE frames
to the record's log and wakes the connections that stream it; a cancel (or the
disconnect of a non-background stream) cancels the task's scope, after which the
log never grows again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._wire import (
    delta_frame,
    event_frame,
    function_call_item,
    message_item,
    obfuscation,
    output_text_part,
    response_object,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._hold import Gate
    from ._ledger import Ledger, ResponseRecord
    from ._models import EmulatedModel, FunctionCall

__all__ = ["Call", "Run", "generate"]

_BATCH = 64  # most deltas appended per wake-up when generation is behind schedule
_TERMINAL = ("completed", "failed", "incomplete", "cancelled")
_ITEM_STATUS = {"queued": "in_progress", "in_progress": "in_progress", "completed": "completed"}
_FAILED_MESSAGE = "The model produced an error while generating the response (emulated)."


class Call:
    """One scripted function call of a run, as streamed so far (internal)."""

    __slots__ = ("call_id", "done", "item_id", "name", "streamed", "tokens")

    def __init__(self, *, item_id: str, call_id: str, call: FunctionCall) -> None:
        self.item_id = item_id
        self.call_id = call_id
        self.name = call.name
        self.tokens = call.tokens()
        self.streamed: int | None = None  # None until its item is added
        self.done: str | None = None  # the item's final status, once done

    @property
    def arguments(self) -> str:
        return "".join(self.tokens[: self.streamed or 0])

    def item(self, response_status: str) -> dict[str, Any]:
        status = self.done or _ITEM_STATUS.get(response_status, "incomplete")
        return function_call_item(self.item_id, self.call_id, self.name, self.arguments, status)


class Run:
    """The server-side state of one response (internal)."""

    def __init__(
        self,
        *,
        record: ResponseRecord,
        model: EmulatedModel,
        tokens: list[str],
        first_token_delay: float,
        max_output_tokens: int | None,
        echo: dict[str, Any],
        input_tokens: int,
        msg_id: str,
        ledger: Ledger,
        keepalive_every: float | None,
        calls: list[Call] | None = None,
        hops: int = 0,
        usage_on_cancel: bool = False,
        obfuscate: bool = True,
        input_items: list[dict[str, Any]] | None = None,
    ) -> None:
        self.record = record
        self.model = model
        self.tokens = tokens
        self.first_token_delay = first_token_delay
        self.max_output_tokens = max_output_tokens
        self.echo = echo
        self.input_tokens = input_tokens
        self.msg_id = msg_id
        self.ledger = ledger
        self.keepalive_every = keepalive_every
        self.created_at = int(time.time())
        self.completed_at: int | None = None
        self.phase = 0  # 1: message item added, 2: text part added
        self.calls: list[Call] = calls or []
        self.hops = hops  # previous_response_id hops from the start of the conversation
        self.usage_on_cancel = usage_on_cancel
        self.obfuscate = obfuscate  # whether the stored delta events carry `obfuscation`
        self.input_items = input_items or []  # as GET .../input_items lists them
        # A best-effort cancel was answered: generation goes on up to this many tokens.
        self.best_effort_stop: int | None = None
        self.has_message = bool(tokens) or not self.calls
        self.message_status: str | None = None  # the message item's status, once done
        self.error: dict[str, Any] | None = None
        self.created_response: dict[str, Any] | None = None
        self.connections = 0
        self.ended = False
        self.scope: anyio.CancelScope | None = None
        self.created = asyncio.Event()
        self.ended_event = asyncio.Event()
        self._changed = asyncio.Event()

    # --- the event log ----------------------------------------------------------------

    def emit(self, event_type: str, fields: dict[str, Any]) -> None:
        if self.ended:  # the log of a stopped response never grows again
            return
        frames = self.record.frames
        frames.append(event_frame(event_type, len(frames), fields))

    def emit_response(self, event_type: str) -> None:
        self.emit(event_type, {"response": self.snapshot()})

    def notify(self) -> None:
        """Wake the connections streaming this response, and the ledger's waiters."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self.ledger._changed()  # pyright: ignore[reportPrivateUsage]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def end(self) -> None:
        """No event will be appended any more: let the streams finish."""
        if not self.ended:
            self.ended = True
            self.ended_event.set()
            self.created.set()
            self.notify()

    def stop(self, reason: str) -> None:
        """Stop generating now, because of a cancel or a disconnected client."""
        record = self.record
        if not record.generating:
            return
        record.status = "cancelled"
        record.stopped_by = "cancel" if reason == "cancel" else "disconnect"
        record.finished_at = time.monotonic()
        if self.scope is not None:
            self.scope.cancel()
        self.end()

    def shutdown(self) -> None:
        """The server is stopping: stop generating, leave the status as it is."""
        if self.scope is not None:
            self.scope.cancel()
        self.end()

    def set_status(self, status: Any) -> None:
        if self.ended:
            return
        record = self.record
        record.status = status
        if status in _TERMINAL:
            record.finished_at = time.monotonic()

    # --- the Response object ----------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self.tokens[: self.record.tokens_generated])

    def snapshot(self, status: Any = None) -> dict[str, Any]:
        """The Response object as it stands now (with `status` instead of the real one)."""
        record = self.record
        status = status or record.status
        output: list[dict[str, Any]] = []
        if self.phase:
            item_status = self.message_status or _ITEM_STATUS.get(status, "incomplete")
            output.append(
                message_item(self.msg_id, item_status, self.text if self.phase > 1 else None)
            )
        output.extend(call.item(status) for call in self.calls if call.streamed is not None)
        terminal = status in _TERMINAL
        if status == "cancelled" and not self.usage_on_cancel:
            terminal = False  # the API answers `usage: null` for a cancelled response
        return response_object(
            response_id=record.id,
            created_at=self.created_at,
            model=record.model,
            status=status,
            background=record.background,
            echo=self.echo,
            output=output,
            usage=(self.input_tokens, record.tokens_generated) if terminal else None,
            error=self.error if status == "failed" else None,
            incomplete_reason="max_output_tokens" if status == "incomplete" else None,
            completed_at=self.completed_at if status == "completed" else None,
        )


async def generate(run: Run, created_gate: Gate) -> None:
    """Generate one response, from `response.created` to its final event.

    Runs in the app's task group; `run.stop()` cancels it at any await.
    """
    with anyio.CancelScope() as scope:
        run.scope = scope
        try:
            if run.ended:
                return
            period = run.keepalive_every
            if period is None:
                await _produce(run, created_gate)
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_keepalive, run, period)
                    await _produce(run, created_gate)
                    tg.cancel_scope.cancel()
        finally:
            run.end()


async def _keepalive(run: Run, period: float) -> None:
    while True:
        await anyio.sleep(period)
        # Not once the response is finished: the cancel of this task may arrive one step late
        # (anyio delivers it with call_soon on asyncio), after response.completed went out.
        if run.record.created_sent and run.record.status not in _TERMINAL:
            run.emit("keepalive", {})
            run.notify()


async def _produce(run: Run, created_gate: Gate) -> None:
    record = run.record
    faults = run.model.faults
    await created_gate.wait()
    if faults.created_delay:
        await anyio.sleep(faults.created_delay)
    if run.ended:
        return

    if not record.background:
        run.set_status("in_progress")
    run.created_response = run.snapshot()
    run.emit("response.created", {"response": run.created_response})
    record.created_sent = True
    run.created.set()
    if record.background:
        run.emit_response("response.queued")
        run.set_status("in_progress")
    run.emit_response("response.in_progress")
    run.notify()

    await anyio.sleep(run.first_token_delay)
    if run.ended:
        return

    # A budget of output tokens over the whole output (message text, then call arguments):
    # `max_output_tokens` ends the response incomplete, an error fault fails it.
    total = len(run.tokens) + sum(len(call.tokens) for call in run.calls)
    cap = run.max_output_tokens
    incomplete = cap is not None and cap < total
    left = cap if cap is not None and incomplete else total
    failing = faults.error_event is not None
    if failing:
        left = min(left, faults.error_after)
    record.tokens_planned = left
    index = 0
    if run.has_message:
        left = await _message(run, left)
        if left is None:
            return
        index = 1
    for call in run.calls:
        if (incomplete or run.best_effort_stop is not None) and not left:
            break
        left = await _function_call(run, call, index, left)
        if left is None:
            return
        index += 1
    if run.best_effort_stop is not None:
        # A best-effort cancel was answered: the response outran it, and now ends.
        if faults.cancel_best_effort_status == "cancelled":
            run.stop("cancel")
            return
        failing = incomplete = False
    if failing:
        _fail(run)
        return
    if incomplete:
        run.set_status("incomplete")
        run.emit_response("response.incomplete")
    else:
        run.set_status("completed")
        run.completed_at = int(time.time())
        run.emit_response("response.completed")
    run.notify()


async def _message(run: Run, left: int) -> int | None:
    """Stream the message item; the tokens left after it, or None when the response ended."""
    msg_id = run.msg_id
    tokens = run.tokens
    run.phase = 1
    run.emit(
        "response.output_item.added",
        {"output_index": 0, "item": message_item(msg_id, "in_progress", None)},
    )
    run.phase = 2
    part_fields = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    run.emit("response.content_part.added", {**part_fields, "part": output_text_part("")})
    run.notify()
    obfuscate = run.obfuscate
    count = min(len(tokens), left)
    count = await _stream(run, count, lambda seq, i: delta_frame(seq, msg_id, tokens[i], obfuscate))
    if run.ended:
        return None
    if _best_effort_over(run):
        return None
    if run.best_effort_stop is not None:
        del tokens[count:]  # the text ends where the run stopped
        left = count
    left -= count
    if run.model.faults.error_event is not None and not left:
        _fail(run)
        return None
    text = run.text
    item_status = "completed" if count == len(tokens) else "incomplete"
    run.emit("response.output_text.done", {**part_fields, "text": text, "logprobs": []})
    run.emit("response.content_part.done", {**part_fields, "part": output_text_part(text)})
    run.message_status = item_status
    run.emit(
        "response.output_item.done",
        {"output_index": 0, "item": message_item(msg_id, item_status, text)},
    )
    return left


async def _function_call(run: Run, call: Call, index: int, left: int) -> int | None:
    """Stream one function call item; the tokens left after it, or None when the run ended."""
    fields = {"item_id": call.item_id, "output_index": index}
    call.streamed = 0
    run.emit("response.output_item.added", {"output_index": index, "item": call.item("queued")})
    run.notify()
    tokens = call.tokens
    count = min(len(tokens), left)

    def frame(seq: int, i: int) -> bytes:
        call.streamed = i + 1
        delta = {**fields, "delta": tokens[i]}
        if run.obfuscate:
            delta["obfuscation"] = obfuscation(seq, tokens[i])
        return event_frame("response.function_call_arguments.delta", seq, delta)

    count = await _stream(run, count, frame)
    if run.ended:
        return None
    if _best_effort_over(run):
        return None
    if run.best_effort_stop is not None:
        del tokens[count:]
        left = count
    left -= count
    if run.model.faults.error_event is not None and not left:
        _fail(run)
        return None
    # `name` is required by openai 2.x's event type; 3.x dropped it but accepts it.
    done = {**fields, "name": call.name, "arguments": call.arguments}
    run.emit("response.function_call_arguments.done", done)
    call.done = "completed" if count == len(tokens) else "incomplete"
    run.emit("response.output_item.done", {"output_index": index, "item": call.item("completed")})
    return left


async def _stream(run: Run, total: int, frame: Callable[[int, int], bytes]) -> int:
    """Append `total` delta frames at the model's rate; `frame(sequence_number, i)` makes one.

    Returns how many it appended: fewer than `total` when a best-effort cancel's extra
    tokens run out first (or the run was stopped).
    """
    record = run.record
    frames = record.frames
    rate = run.model.tokens_per_s
    base = record.tokens_generated
    start = anyio.current_time()
    done = 0
    while True:
        if run.best_effort_stop is not None:
            total = min(total, max(done, run.best_effort_stop - base))
        if done >= total:
            return done
        if run.ended:
            # Stopped while this task was already scheduled to wake: anyio delivers a scope's
            # cancellation on asyncio with call_soon, so one more step can run. Not a token more.
            return done
        now = anyio.current_time()
        due = min(total, int((now - start) * rate) + 1, done + _BATCH)
        if due <= done:
            await anyio.sleep(start + done / rate - now)
            continue
        for i in range(done, due):
            frames.append(frame(len(frames), i))
        record.tokens_generated = base + due
        if record.cancel_requested_at is not None:
            record.tokens_after_cancel += due - done
        done = due
        run.notify()
        await anyio.lowlevel.checkpoint()


def _best_effort_over(run: Run) -> bool:
    """After a best-effort cancel: stop now if its extra tokens ran out and it ends cancelled."""
    stop = run.best_effort_stop
    if stop is None or run.model.faults.cancel_best_effort_status != "cancelled":
        return False
    if run.record.tokens_generated < stop:
        return False
    run.stop("cancel")
    return True


def _fail(run: Run) -> None:
    shape = run.model.faults.error_event
    error = {"code": "server_error", "message": _FAILED_MESSAGE}
    if shape == "flat":
        run.emit("error", {**error, "param": None})
    else:
        run.emit("error", {"error": {"type": "server_error", **error, "param": None}})
    run.error = error
    run.set_status("failed")
    run.emit_response("response.failed")
    run.notify()
