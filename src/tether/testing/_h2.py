"""HTTP/2 on hypercorn: reset the streams the emulator cuts, instead of leaving them open.

When an ASGI app returns without finishing its response body (the emulator does it on
purpose to cut a stream: `Faults.drop_after`, an abandoned stream), uvicorn closes the
HTTP/1.1 connection, so the client sees a broken body. hypercorn's HTTP/2 protocol only
forgets the stream: it sends neither END_STREAM nor RST_STREAM, and the client waits
forever on a stream that will never move again. `install_stream_reset` makes hypercorn
reset such a stream (RST_STREAM, INTERNAL_ERROR), which is what an HTTP/2 server does
when the upstream of a stream fails: the client's read raises, its other streams on the
connection go on, and the stream's slot is freed on both sides.
"""

from __future__ import annotations

from typing import Any

__all__ = ["install_stream_reset"]

_installed = False


def install_stream_reset() -> None:
    """Make hypercorn reset (RST_STREAM) an HTTP/2 stream whose app returned mid-body.

    Idempotent. It replaces the `H2Protocol` that hypercorn's protocol wrapper builds with
    a subclass that differs only for a stream closed by its app with its body unfinished
    (a case that otherwise leaves the stream open for good).
    """
    global _installed
    if _installed:
        return
    import h2.errors
    import hypercorn.protocol
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.h2 import H2Protocol

    class _ResettingH2Protocol(H2Protocol):
        async def stream_send(self, event: Any) -> None:
            if isinstance(event, StreamClosed):
                buffer = self.stream_buffers.get(event.stream_id)
                if buffer is not None and not buffer.complete and not self.closed:
                    self.connection.reset_stream(
                        event.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR
                    )
                    await buffer.close()
                    del self.stream_buffers[event.stream_id]
                    self.priority.remove_stream(event.stream_id)
                    await self._flush()
            await super().stream_send(event)

    hypercorn.protocol.H2Protocol = _ResettingH2Protocol  # type: ignore[misc]
    _installed = True
