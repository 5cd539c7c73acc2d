"""One response on the emulated server: its state and event log.

Runs on the server thread's event loop only. The generation task (`_generate.py`) appends
SSE frames to the record's log and wakes the connections that stream it; a cancel (or the
disconnect of a non-background stream) cancels the task's scope, after which the log
never grows again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ._wire import (
    event_frame,
    function_call_item,
    message_item,
    response_object,
)

if TYPE_CHECKING:
    import anyio

    from ._book import LedgerBook
    from ._ledger import Ledger
    from ._models import EmulatedModel, FunctionCall

__all__ = ["TERMINAL", "Call", "Run"]

TERMINAL = ("completed", "failed", "incomplete", "cancelled")
_ITEM_STATUS = {"queued": "in_progress", "in_progress": "in_progress", "completed": "completed"}


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
        record: Ledger.Record,
        model: EmulatedModel,
        tokens: list[str],
        first_token_delay: float,
        max_output_tokens: int | None,
        echo: dict[str, Any],
        input_tokens: int,
        msg_id: str,
        book: LedgerBook,
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
        self.book = book
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
        self.book.changed()

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
        if status in TERMINAL:
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
        terminal = status in TERMINAL
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
