"""The HTTP servers under the emulator's app: uvicorn (HTTP/1.1) and hypercorn (HTTP/2, h2c).

Each serves the app on a socket bound by the caller until an event is set, on the server
thread's own asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import warnings
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._app import EmulatorApp

__all__ = ["check_host", "listening_socket", "quiet_uvicorn", "serve_hypercorn", "serve_uvicorn"]

_DROPPED = "ASGI callable returned without completing response."


class _DroppedConnectionFilter(logging.Filter):
    """Silence uvicorn's error for connections the emulator cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DROPPED


def quiet_uvicorn() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedConnectionFilter) for f in logger.filters):
        logger.addFilter(_DroppedConnectionFilter())


async def serve_uvicorn(app: EmulatorApp, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve HTTP/1.1 with uvicorn (h11) on `sock` until `stop` is set."""
    import uvicorn

    class _Server(uvicorn.Server):
        """Exits when told, instead of polling `should_exit` every 100 ms."""

        async def main_loop(self) -> None:
            await stop.wait()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's shutdown without its fixed 100 ms pause (paid by every test).

            The same steps: stop accepting, ask every connection to close, wait (bounded by
            the graceful timeout) for connections and tasks to finish, then the lifespan.
            """
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            with anyio.move_on_after(self.config.timeout_graceful_shutdown):
                # uvicorn's server state has no event to wait on: poll it, as uvicorn does.
                while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            for task in self.server_state.tasks:
                task.cancel()
            for server in self.servers:
                await server.wait_closed()
            await self.lifespan.shutdown()

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        ws="none",
        lifespan="on",
        loop="asyncio",
        http="h11",
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=2,
        log_config=None,
    )
    try:
        await _Server(config).serve(sockets=[sock])
    finally:
        sock.close()


async def serve_hypercorn(app: EmulatorApp, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve HTTP/1.1 and HTTP/2 (h2c, prior knowledge) with hypercorn until `stop` is set."""
    import hypercorn.asyncio
    import hypercorn.config

    from .._compat import install_h2_fixes

    install_h2_fixes()
    config = hypercorn.config.Config()
    # hypercorn adopts the descriptor (socket.socket(fileno=...)) and closes it when it stops.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tether.testing.hypercorn")
    config.graceful_timeout = 2
    config.include_server_header = False
    config.include_date_header = False
    serve: Any = hypercorn.asyncio.serve  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    await serve(app, config, shutdown_trigger=stop.wait, mode="asgi")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to *host* and *port* (0: an ephemeral one), listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto
    # is TCP; with proto 0 every response after the first on a connection waits 40 ms
    # (Nagle against delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback *host* unless *allow_remote*; warn when it is allowed.

    Raises:
        ValueError: A non-loopback host without `allow_remote=True`.
    """
    if host in ("127.0.0.1", "localhost", "::1"):
        return
    if not allow_remote:
        raise ValueError(f"the emulator binds loopback only; host={host!r} needs allow_remote=True")
    warnings.warn(
        f"the Responses emulator is listening on {host!r}: anyone who can reach it can use it",
        UserWarning,
        stacklevel=3,
    )
