"""HTTP/2 on hypercorn: two fixes to its HTTP/2 protocol, for the emulator's use of it.

It subclasses hypercorn's ``H2Protocol`` (``hypercorn/protocol/h2.py``: overriding
``_handle_events`` and ``stream_send``; reading ``streams``, ``stream_buffers``,
``priority``, ``connection``, ``closed``, ``_flush``) and puts the subclass where
``ProtocolWrapper`` looks ``H2Protocol`` up when a connection starts
(``hypercorn/protocol/__init__.py``). ``tests/test_compat.py`` checks those names
(hypercorn 0.18).

Request data for a stream already closed: when an app answers without reading the request
body (the emulator's cancel does), the client's DATA frame (even an empty one with
END_STREAM) may arrive after the stream was closed; hypercorn 0.18 then raises KeyError and
drops the whole connection, every other stream on it included (pgjones/hypercorn#329,
#197; fixes proposed in pgjones/hypercorn#312 and #334). The fix drops the data and
gives its flow-control window back, as an HTTP/2 server must.

Streams cut by the app: when an ASGI app returns without finishing its response body (the emulator does it on
purpose to cut a stream: `Faults.drop_after`, an abandoned stream), uvicorn closes the
HTTP/1.1 connection, so the client sees a broken body. hypercorn's HTTP/2 protocol only
forgets the stream: it sends neither END_STREAM nor RST_STREAM, and the client waits
forever on a stream that will never move again. The fix makes hypercorn reset such a
stream (RST_STREAM, INTERNAL_ERROR), which is what an HTTP/2 server does
when the upstream of a stream fails: the client's read raises, its other streams on the
connection go on, and the stream's slot is freed on both sides.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["install_h2_fixes"]

_installed = False


def install_h2_fixes() -> None:
    """Fix hypercorn's HTTP/2 protocol for the two cases above (see the module docstring).

    Idempotent. It replaces the `H2Protocol` that hypercorn's protocol wrapper builds with
    a subclass that differs only in the two cases above (a stream cut by its app, which
    otherwise stays open for good; request data for a closed stream, which otherwise
    drops the connection). Every hypercorn server of the process gets it.
    """
    global _installed
    if _installed:
        return
    import h2.errors
    import h2.events
    import h2.exceptions
    import hypercorn.protocol
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.h2 import H2Protocol

    class _ResettingH2Protocol(H2Protocol):
        async def _handle_events(self, events: list[Any]) -> None:
            # One at a time: a stream opened by one event must exist for the next.
            for event in events:
                if (
                    isinstance(event, h2.events.DataReceived)
                    and event.stream_id not in self.streams
                ):
                    # The request body of a stream already answered and closed (its app
                    # replied without reading it): hypercorn raises KeyError and drops the
                    # whole connection. Drop the data only, and give its window back.
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self.connection.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id
                        )
                    continue
                await super()._handle_events([event])

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
