"""The emulator's server thread: its app served on a socket, on an asyncio loop of its own.

[`ResponsesEmulator`][tether.testing.ResponsesEmulator] (``_server.py``) binds the socket
and builds the app; a ``ServerThread`` serves them (uvicorn, or hypercorn for HTTP/2) in a
daemon thread that runs its own asyncio loop whatever the caller runs (asyncio, trio, or
plain threads), reports once the app accepts connections (its lifespan calls ``on_ready``),
and, on ``stop()``, ends every stream and run, stops the server, and joins the thread. One
``ServerThread`` serves one ``start()`` of the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, final

from ._http_servers import serve_hypercorn, serve_uvicorn

if TYPE_CHECKING:
    import socket

    from ._app import EmulatorApp

__all__ = ["ServerThread"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@final
class ServerThread:
    """Serve an app on *sock* in a thread of its own, from ``start(app)`` to ``stop()``."""

    def __init__(self, sock: socket.socket, *, http2: bool) -> None:
        self._sock = sock
        self._http2 = http2
        self._thread = threading.Thread(target=self._serve, name="tether-emulator", daemon=True)
        self._app: EmulatorApp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        """What made the server fail, if it did."""

    def on_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        """(On the server's loop, from the app's lifespan.) The app accepts connections."""
        self._loop = loop
        self._ready.set()

    def start(self, app: EmulatorApp) -> bool:
        """Serve *app*; ``True`` once it accepts connections, ``False`` if it failed to start
        (``error`` says why) or did not within ``_START_TIMEOUT`` (then call ``stop()``)."""
        self._app = app
        self._thread.start()
        return self._ready.wait(_START_TIMEOUT) and self.error is None

    def _serve(self) -> None:
        assert self._app is not None
        app, sock = self._app, self._sock
        serve_on = serve_hypercorn if self._http2 else serve_uvicorn

        async def main() -> None:
            self._stop_event = stop = asyncio.Event()
            await serve_on(app, sock, stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            if sock.fileno() != -1:
                sock.close()

    def stop(self) -> None:
        """End every stream and run, stop serving, and join the thread."""
        loop, app, stop = self._loop, self._app, self._stop_event
        if loop is not None and app is not None and stop is not None:

            def shut() -> None:
                app.close()
                stop.set()

            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(shut)
        self._thread.join(_STOP_TIMEOUT)
        self._loop = None
        self._stop_event = None
