"""The generation task of one emulated response: it writes the run's event log, in time.

Runs on the server thread's event loop, in the app's task group: it waits out the model's
time to first token, then appends the message and function call events at the model's
token rate (in batches when behind schedule), applies the model's faults, and ends the
run. A stop (a cancel, a disconnect) cancels its scope; the log never grows after that.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._run import TERMINAL
from ._wire import (
    delta_frame,
    event_frame,
    message_item,
    obfuscation,
    output_text_part,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._hold import Gate
    from ._run import Call, Run

__all__ = ["generate"]

_BATCH = 64  # most deltas appended per wake-up when generation is behind schedule
_FAILED_MESSAGE = "The model produced an error while generating the response (emulated)."


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
        if run.record.created_sent and run.record.status not in TERMINAL:
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
