"""The emulator's SSE responses: a connection following a run's event log.

One per streaming request (a create with ``stream=true``, a resume): it sends the log from
its cursor on, cuts the connection where a fault says, and notices its client leaving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from starlette.responses import Response

from ._wire import add_obfuscation, strip_obfuscation

if TYPE_CHECKING:
    import asyncio

    from starlette.types import Receive, Scope, Send

    from ._run import Run

__all__ = ["EventStream", "until_disconnected"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
ABANDONED_AFTER = 2.0
"""On HTTP/2, seconds a stream may stay blocked (its client reads nothing, its flow-control
window is shut) after its response ended, before the server resets it. A client's HTTP
stack may never send RST_STREAM for a stream it closed early (httpcore's h2 does not):
such a stream would keep its slot for good, and after 100 the connection takes no more."""


async def until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(Response):
    """An SSE response that follows a run's event log from `cursor` until it ends."""

    def __init__(
        self, closing: asyncio.Event, run: Run, cursor: int, obfuscate: bool | None = None
    ) -> None:
        super().__init__(status_code=200)
        self._closing = closing
        self._run = run
        self._cursor = cursor
        self._first = run.connections == 0
        run.connections += 1
        # None: send the log as stored; else add or strip `obfuscation` where it differs.
        self._obfuscate = None if obfuscate is None or obfuscate == run.obfuscate else obfuscate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self._run
        record = run.record
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        record.listeners += 1
        run.book.changed()
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
            run.book.changed()
        # Unfinished (cut, disconnected, abandoned): return without finishing the body.
        # uvicorn closes the HTTP/1.1 connection, and the client sees an incomplete
        # message; on HTTP/2 hypercorn resets the stream (see _compat/_hypercorn.py).

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        await until_disconnected(receive)
        scope.cancel()

    async def _watch_abandoned(self, scope: anyio.CancelScope) -> None:
        """HTTP/2: reset the stream if it is still blocked a while after its response ended.

        A client that closed the stream without RST_STREAM (httpcore's h2 never sends
        one) reads nothing more: once its flow-control window is full, the stream would
        stay open for good, its slot taken, and the connection refuses new streams after
        100 of them. Returning without finishing the body makes hypercorn reset it.
        """
        await self._run.ended_event.wait()
        await anyio.sleep(ABANDONED_AFTER)
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
        closing = self._closing
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
