"""ResponsesEmulator: the emulated Responses API, served by uvicorn in a thread.

The server thread runs its own asyncio loop whatever the caller runs (asyncio, trio,
or plain threads); tests talk to it over real HTTP with the real `openai` client. This
module is the emulator's face (its settings, clients, waits and holds, `start` and
`stop`, and `serve`); the thread itself is `_server_thread.py`'s `ServerThread`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, final

import anyio

from ._app import EmulatorApp
from ._book import LedgerBook
from ._clients import API_KEY, http_client_for, wants_http2
from ._hold import Gate, HoldPoint
from ._http_servers import check_host, listening_socket, quiet_uvicorn
from ._ledger import Ledger
from ._models import EmulatedModel
from ._server_thread import ServerThread

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    import openai

__all__ = ["ResponsesEmulator"]


@final
class ResponsesEmulator:
    """A local server that speaks the OpenAI Responses API, with simulated models.

    It serves `POST /v1/responses` (streaming or not, background or not),
    `GET /v1/responses/{id}` (with `stream=true&starting_after=N` to resume),
    `POST /v1/responses/{id}/cancel`, `DELETE /v1/responses/{id}` and
    `GET /v1/responses/{id}/input_items`, closely enough that the real `openai` client
    cannot tell, over HTTP/1.1 (uvicorn) or, with `http2=True`, HTTP/2 too (hypercorn). Its [`Ledger`][tether.testing.Ledger] records what every response
    did: tokens generated after a cancel arrived, orphans still generating with
    nobody listening, cancels in flight.

    Start it with `with` (sync) or `async with` (asyncio or trio); it binds an
    ephemeral port on 127.0.0.1 and runs in a background thread until the block exits.

    Args:
        models: Simulated models by name (default: `EmulatedModel.defaults()`).
        seed: Seeds the ids, the lorem text and the latency draws.
        host: The interface to bind. Anything but a loopback address needs
            `allow_remote=True`.
        port: The port, 0 for an ephemeral one.
        keepalive_every: Emit `keepalive` events at this period (seconds) in every
            stream, unless a model's `Faults.keepalive_every` says otherwise.
        allow_remote: Allow binding a non-loopback host (it warns).
        http2: Serve with hypercorn, which speaks HTTP/2 over cleartext with prior
            knowledge (h2c) as well as HTTP/1.1, instead of uvicorn (HTTP/1.1 only).
            Its `client()` and `async_client()` then speak HTTP/2. Needs `hypercorn`
            and `h2` (both in `tether[testing]`).
        usage_on_cancel: Give a cancelled response a `usage` (the tokens generated until
            the cancel) instead of `null`, which is what the API answers.
        api_key: When set, every request must carry `Authorization: Bearer <api_key>`
            (401 `invalid_api_key` otherwise, like the API); its clients use it.

    Raises:
        ValueError: A non-loopback host without `allow_remote=True`.

    Example:
        >>> with ResponsesEmulator(models={"fast": EmulatedModel(ttft=0.0, length=3)}) as emu:
        ...     response = emu.client().responses.create(model="fast", input="Hi")
        >>> response.status, emu.ledger[response.id].tokens_generated
        ('completed', 3)
    """

    def __init__(
        self,
        models: MutableMapping[str, EmulatedModel] | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        keepalive_every: float | None = None,
        allow_remote: bool = False,
        http2: bool = False,
        usage_on_cancel: bool = False,
        api_key: str | None = None,
    ) -> None:
        check_host(host, allow_remote=allow_remote)
        if http2:
            _require_http2()
        self.models: MutableMapping[str, EmulatedModel] = (
            EmulatedModel.defaults() if models is None else models
        )
        """Simulated models by name: add or replace one at any time."""
        self._book = LedgerBook()
        self.ledger: Ledger = Ledger(self._book)
        """What the server did (see `Ledger`)."""
        self.seed = seed
        self.host = host
        self.keepalive_every = keepalive_every
        self.http2 = http2
        """Whether it serves HTTP/2 (h2c) with hypercorn, besides HTTP/1.1."""
        self.usage_on_cancel = usage_on_cancel
        """Whether a cancelled response carries a `usage` (the API's is `null`)."""
        self.api_key = api_key
        """The key every request must carry (None: any). Change it to rotate the key."""
        self._port = port
        self._gates: dict[str, Gate] = {"created": Gate(), "cancel": Gate()}
        self._thread: ServerThread | None = None

    # --- addresses and clients ------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (known once started).

        Example:
            >>> with ResponsesEmulator() as emu:
            ...     assert emu.port > 0
        """
        return self._port

    @property
    def base_url(self) -> str:
        """The API base URL, `http://127.0.0.1:PORT/v1`, for `openai.OpenAI(base_url=...)`.

        Example:
            >>> with ResponsesEmulator() as emu:
            ...     assert emu.base_url.endswith("/v1")
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/v1"

    def _http2(self, http2: bool | None, kwargs: dict[str, Any]) -> bool:
        """Whether to build an HTTP/2 client: `http2`, or by default the emulator's own."""
        return wants_http2(http2, serves_http2=self.http2, kwargs=kwargs)

    def client(self, *, http2: bool | None = None, **kwargs: Any) -> openai.OpenAI:
        """An `openai.OpenAI` client for this emulator; `kwargs` go to its constructor.

        Args:
            http2: Speak HTTP/2 (h2c, prior knowledge) instead of HTTP/1.1; the default
                is the emulator's own `http2`, unless you pass an `http_client` (used as
                it is). It builds the SDK's default HTTP client
                (`openai.DefaultHttpxClient`) with `http1=False, http2=True`; `True`
                with an `http_client` of yours is an error.
            **kwargs: For `openai.OpenAI(...)` (`max_retries`, `timeout`, ...).

        Raises:
            ValueError: `http2=True` on an emulator without `http2`, or with an `http_client`.

        Example:
            >>> with ResponsesEmulator() as emu:
            ...     client = emu.client(max_retries=0)
        """
        import openai

        kwargs.setdefault("api_key", self.api_key or API_KEY)
        use_http2 = self._http2(http2, kwargs)
        kwargs["http_client"] = http_client_for(
            kwargs.get("http_client"), http2=use_http2, sync=True
        )
        return openai.OpenAI(base_url=self.base_url, **kwargs)

    def async_client(self, *, http2: bool | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        """An `openai.AsyncOpenAI` client for this emulator (asyncio or trio).

        Args:
            http2: Speak HTTP/2 (h2c, prior knowledge) instead of HTTP/1.1; the default
                is the emulator's own `http2` (see `client`).
            **kwargs: For `openai.AsyncOpenAI(...)`.

        Raises:
            ValueError: `http2=True` on an emulator without `http2`, or with an `http_client`.

        Example:
            >>> with ResponsesEmulator(http2=True) as emu:
            ...     client = emu.async_client(max_retries=0)  # speaks HTTP/2
        """
        import openai

        kwargs.setdefault("api_key", self.api_key or API_KEY)
        use_http2 = self._http2(http2, kwargs)
        kwargs["http_client"] = http_client_for(
            kwargs.get("http_client"), http2=use_http2, sync=False
        )
        return openai.AsyncOpenAI(base_url=self.base_url, **kwargs)

    # --- waiting and holding ----------------------------------------------------------

    async def wait_for(self, predicate: Callable[[Ledger], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until `predicate(ledger)` is true, re-checking it on every ledger change.

        Works on asyncio and trio, and is cancellable. Use it instead of sleeping.

        Args:
            predicate: Called with the ledger; must not block.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: The predicate was still false after `timeout` seconds.

        Example:
            >>> async def until_cancelled(emu: ResponsesEmulator, rid: str) -> None:
            ...     await emu.wait_for(lambda ledger: ledger[rid].status == "cancelled")
        """
        await self._book.wait_for(lambda: predicate(self.ledger), timeout)

    def wait_for_sync(self, predicate: Callable[[Ledger], bool], timeout: float = 10.0) -> None:
        """`wait_for` for synchronous code: blocks the calling thread.

        Raises:
            TimeoutError: The predicate was still false after `timeout` seconds.

        Example:
            >>> def until_idle(emu: ResponsesEmulator) -> None:
            ...     emu.wait_for_sync(lambda ledger: not ledger.orphans())
        """
        self._book.wait_for_sync(lambda: predicate(self.ledger), timeout)

    def hold(self, point: HoldPoint) -> ResponsesEmulator.Hold:
        """Park requests at `point` until the returned hold is released.

        `"created"`: new responses are recorded in the ledger but send no
        `response.created` (their `created_sent` stays False). `"cancel"`: cancel
        requests wait (counted in `Ledger.cancels_in_flight`).

        Raises:
            ValueError: An unknown point.

        Example:
            >>> def many_cancels_at_once(emu: ResponsesEmulator) -> None:
            ...     with emu.hold("cancel"):
            ...         ...  # start the cancels, then wait_for cancels_in_flight == N
        """
        if point not in self._gates:
            raise ValueError(f"point must be 'created' or 'cancel', got {point!r}")
        return ResponsesEmulator.Hold(self._gates[point], point)

    @final
    class Hold:
        """An active hold on one point of the protocol; release it to let requests go on.

        Returned by [`ResponsesEmulator.hold`][tether.testing.ResponsesEmulator.hold]. Use it
        as a context manager to release it on exit. Releasing twice is harmless.

        Example:
            >>> def cancels_park(emu: ResponsesEmulator) -> None:
            ...     with emu.hold("cancel"):
            ...         ...  # cancel requests sent here wait until the block exits
        """

        def __init__(self, gate: Gate, point: HoldPoint) -> None:
            self._gate = gate
            self._released = False
            self._lock = threading.Lock()
            self.point: HoldPoint = point
            """Where requests park: `"created"` or `"cancel"`."""
            gate.acquire()

        @property
        def active(self) -> bool:
            """True until `release()` is called.

            Example:
                >>> def is_on(hold: ResponsesEmulator.Hold) -> bool:
                ...     return hold.active
            """
            return not self._released

        def release(self) -> None:
            """Let every request parked by this hold go on (unless another hold remains).

            Example:
                >>> def let_go(hold: ResponsesEmulator.Hold) -> None:
                ...     hold.release()
            """
            with self._lock:
                if self._released:
                    return
                self._released = True
            self._gate.release()

        def __enter__(self) -> ResponsesEmulator.Hold:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.release()

        def __repr__(self) -> str:
            state = "active" if self.active else "released"
            return f"<Hold {self.point!r} {state}>"

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start serving in a background thread; return once it accepts connections.

        Example:
            >>> emu = ResponsesEmulator()
            >>> emu.start(); emu.stop()
        """
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        quiet_uvicorn()
        for gate in self._gates.values():
            gate.reopen()
        sock = listening_socket(self.host, self._port)
        self._port = sock.getsockname()[1]
        thread = ServerThread(sock, http2=self.http2)
        app = EmulatorApp(
            models=self.models,
            book=self._book,
            seed=self.seed,
            keepalive_every=self.keepalive_every,
            gates=self._gates,
            on_ready=thread.on_ready,
            usage_on_cancel=self.usage_on_cancel,
            api_key=lambda: self.api_key,
        )
        self._thread = thread
        if not thread.start(app):
            self.stop()
            raise RuntimeError("the Responses emulator failed to start") from thread.error

    def stop(self) -> None:
        """Stop serving: end every stream and run, and join the server thread.

        Example:
            >>> emu = ResponsesEmulator()
            >>> emu.start(); emu.stop()
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()

    def __enter__(self) -> ResponsesEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> ResponsesEmulator:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<ResponsesEmulator {self.base_url} {state}, {len(self.ledger)} responses>"

    @staticmethod
    def serve(
        *, port: int = 8000, host: str = "127.0.0.1", seed: int = 0, http2: bool = False
    ) -> None:
        """Serve the emulator in the foreground until Ctrl-C, printing its base URL.

        This is what `python -m tether.testing` and `tether emulator` run.

        Args:
            port: The port to bind (0 for an ephemeral one).
            host: The interface; anything but loopback needs care (it warns).
            seed: Seeds ids, text and latency draws.
            http2: Serve HTTP/2 (h2c) as well, with hypercorn.

        Example:
            >>> ResponsesEmulator.serve(port=8000)  # doctest: +SKIP
            Responses emulator on http://127.0.0.1:8000/v1 (Ctrl-C to stop)
        """
        emu = ResponsesEmulator(
            seed=seed,
            host=host,
            port=port,
            allow_remote=host not in ("127.0.0.1", "localhost", "::1"),
            http2=http2,
        )
        with emu:
            print(f"Responses emulator on {emu.base_url} (Ctrl-C to stop)", flush=True)
            print("models: " + ", ".join(sorted(emu.models)), flush=True)
            stop = threading.Event()
            try:
                while not stop.wait(3600):
                    pass
            except KeyboardInterrupt:
                print("stopping", flush=True)


def _require_http2() -> None:
    from ._extra import require

    require("hypercorn", "h2", what="ResponsesEmulator(http2=True)")
