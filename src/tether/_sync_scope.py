"""The sync Scope: one portal thread, one mirrored ``AsyncOpenAI``, one async Scope.

A [`tether.sync.Scope`][tether.sync.Scope] owns, for its ``with`` block: an anyio blocking
portal (an event loop in a thread of its own, joined on exit); the ``AsyncOpenAI`` twin of
your ``OpenAI`` (and one per other client a race names), closed on exit, so connections are
reused; a host task that holds the async [`Scope`][tether.Scope] open (its deadline, grace,
concurrency limit, journal) and a task group inside it. Every stream and race of the sync
scope runs as a task of that group: the async scope's deadline reaches them like any
cancellation, and they stop through the async ``ResponseGuard.stop``.

A bare ``OpenAI`` passed to ``tether.sync.guarded_stream`` gets a scope of its own for the
block; ``open_scope`` shares one between blocks (and threads). A sync race runs through
``Scope.run`` as a ``Job`` (``_sync_job.py``), which Ctrl-C can cancel. At the exit, a block
still open (in a generator, another thread) is stopped, then its session ended.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent import futures
from contextlib import ExitStack, suppress
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import anyio
from anyio import RunFinishedError
from anyio.from_thread import run_sync
from anyio.lowlevel import EventLoopToken, checkpoint_if_cancelled, current_token

from . import _sync_portal
from ._errors import DeadlineExceeded, TetherError
from ._scope import DEFAULT_FIRST_EVENT_TIMEOUT, DEFAULT_GRACE
from ._scope import Scope as AsyncScope
from ._sync_client import async_twin
from ._sync_job import Job
from ._sync_portal import settle, wait
from ._validate import check_timeout

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable, Coroutine
    from types import TracebackType

    import openai
    from anyio.abc import TaskGroup
    from anyio.from_thread import BlockingPortal

    from ._journal import Journal
    from ._outcome import StreamOutcome

__all__ = ["Scope", "open_scope"]

T = TypeVar("T")

_CLEANUP_LIMIT = 10.0
"""Seconds closing the async clients may take (it only closes sockets)."""


@final
class Scope:
    """The sync face of [`tether.Scope`][tether.Scope]: a deadline, a grace, a portal.

    Made by [`tether.sync.open_scope`][tether.sync.open_scope]; pass it to
    [`tether.sync.guarded_stream`][tether.sync.guarded_stream] and
    [`tether.sync.race`][tether.sync.race] instead of the client. Its blocks share one
    event-loop thread and one mirrored async client (and its connections). Any thread may
    open streams in it while it is open.

    Example:
        ```python
        with tether.sync.open_scope(client, deadline=30) as scope:
            with tether.sync.guarded_stream(scope, model="gpt-5", input="Hi") as stream:
                print(stream.get_final_response().output_text)
            print(f"{scope.remaining():.1f}s left")
        ```
    """

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        deadline: float | None,
        grace: float,
        first_event_timeout: float,
        max_concurrency: int | None,
        confirm: bool,
        journal: Journal | str | os.PathLike[str] | None,
        async_http_client: Any = None,
        instead: str = "tether.open_scope",
    ) -> None:
        self._limit = check_timeout("deadline", deadline)
        self.client: openai.OpenAI = client
        """The sync client (its settings are mirrored on the async side)."""
        twin = async_twin(client, http_client=async_http_client, instead=instead)
        self._twins: dict[int, openai.AsyncOpenAI] = {id(client): twin}
        self._async = AsyncScope(
            twin,
            grace=grace,
            first_event_timeout=first_event_timeout,
            max_concurrency=max_concurrency,
            confirm=confirm,
            journal=journal,
        )
        self._portal: BlockingPortal | None = None
        self._stack: ExitStack | None = None
        self._host: futures.Future[None] | None = None
        self._group: TaskGroup | None = None
        self._closing: anyio.Event | None = None
        self._token: EventLoopToken | None = None  # the portal loop's
        self._loop_thread: int | None = None
        self._deadline = math.inf
        self._entered = False

    def __repr__(self) -> str:
        return f"<tether.sync.Scope deadline={self._deadline!r} live={self.live}>"

    # ------------------------------------------------------------------ state

    @property
    def grace(self) -> float:
        """Seconds each server-side cancel may take, retries included."""
        return self._async.grace

    @property
    def async_scope(self) -> AsyncScope:
        """The async [`Scope`][tether.Scope] behind it, on the portal's event loop."""
        return self._async

    @property
    def first_event_timeout(self) -> float:
        """Seconds to wait for ``response.created`` when a stream opens."""
        return self._async.first_event_timeout

    @property
    def deadline(self) -> float:
        """The absolute deadline, on ``time.monotonic()``'s clock (``inf`` if none)."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds left before the deadline (``inf`` if there is none; never negative)."""
        return max(0.0, self._deadline - time.monotonic())

    @property
    def cancel_called(self) -> bool:
        """Whether the scope was cancelled (explicitly, or by its deadline)."""
        return self._async.cancel_called

    @property
    def live(self) -> int:
        """How many guarded streams are open in this scope right now."""
        return self._async.live

    @property
    def outcomes(self) -> tuple[StreamOutcome, ...]:
        """The outcome of every guarded stream that ended in this scope, in the order they ended."""
        return self._async.outcomes

    def cancel(self) -> None:
        """Cancel everything running in the scope; each live response is cancelled on the server.

        Thread-safe. Every live stream's iteration then ends (``reason="scope_cancelled"``);
        a stream opened afterwards raises ``TetherError`` without sending anything; the
        ``with`` block exits quietly.
        """
        portal = self._require_open("cancel()")
        portal.call(self._async.cancel)

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Scope:
        if self._entered:
            raise RuntimeError("a tether.sync.Scope can be entered only once")
        self._entered = True
        with ExitStack() as stack:
            portal = stack.enter_context(_sync_portal.start_portal())
            self._closing = closing = portal.call(anyio.Event)  # what the host waits for
            stack.callback(portal.call, closing.set)  # raised into us from here on: let it end
            self._host, _ = portal.start_task(self._run_host, closing)
            self._portal = portal
            _sync_portal.OPEN.add(self)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        _sync_portal.OPEN.discard(self)
        portal, host, closing = self._portal, self._host, self._closing
        if stack is None or portal is None or host is None or closing is None:  # pragma: no cover
            return
        with stack:
            self._portal = None
            portal.call(closing.set)
            deferred = settle(host)
        if deferred is not None:
            raise deferred from exc
        error = host.exception()
        if error is not None and exc is None:
            raise error  # DeadlineExceeded: the deadline passed, the body exited normally

    async def _run_host(self, closing: anyio.Event, *, task_status: Any) -> None:
        """Hold the async scope and its task group open until the sync block exits."""
        try:
            async with self._async.run(self._limit):
                async with anyio.create_task_group() as group:
                    self._group = group
                    self._deadline = time.monotonic() + (
                        self._async.deadline - anyio.current_time()
                    )
                    self._token = current_token()
                    self._loop_thread = threading.get_ident()
                    task_status.started()
                    with anyio.CancelScope(shield=True):  # the body's lifetime, not a stop path
                        await closing.wait()
                    await checkpoint_if_cancelled()  # a passed deadline: the scope raises
                    await self._async.stop_abandoned()  # a `with` left open: stop, end its session
                    group.cancel_scope.cancel("tether.sync: the scope exited")
        finally:
            self._group = None
            with anyio.move_on_after(_CLEANUP_LIMIT, shield=True):
                for twin in self._twins.values():
                    await twin.close()

    # ---------------------------------------------------------- running work

    def _require_open(self, what: str) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            state = "has exited" if self._entered else "is not open"
            raise RuntimeError(
                f"{what} needs an open scope: this tether.sync.Scope {state} "
                "(use it inside `with tether.sync.open_scope(...) as scope:`)"
            )
        return portal

    def twin(self, client: object, index: int) -> openai.AsyncOpenAI:
        """The async twin of another sync client a race names (one per client, closed on exit)."""
        if id(client) not in self._twins:
            try:
                self._twins[id(client)] = async_twin(client, instead="tether.race")
            except TypeError as exc:
                raise TypeError(f"requests[{index}]['client']: {exc}") from None
        return self._twins[id(client)]

    def spawn(
        self,
        func: Callable[[], Coroutine[Any, Any, object]],
        what: str,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        """Start *func* (after *prepare*, both on the loop) as a task in the async scope."""
        self._require_open(what)
        if not self._on_loop(self._spawn, func, prepare):
            self.raise_cancelled(what)

    def _spawn(
        self, func: Callable[[], Coroutine[Any, Any, object]], prepare: Callable[[], object] | None
    ) -> bool:
        """(On the loop.) Start *func*; ``False`` (nothing started) in a cancelled scope."""
        assert self._group is not None
        if self._async.cancel_called:  # a task started now might never run a line
            return False
        if prepare is not None:
            prepare()
        self._group.start_soon(func)
        return True

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run the sync *func* on the loop thread and return its result: as a callback of
        the loop (``anyio.from_thread.run_sync`` with its token), not in a task, as
        ``BlockingPortal.call`` does for every call, even of a sync function."""
        self._require_open("this call")
        return self._on_loop(func, *args)

    def tell(self, func: Callable[..., object], *args: Any) -> None:
        """``call``, or nothing once the block has exited: the host stops what is left open."""
        if self._portal is not None:
            with suppress(RunFinishedError):  # the host ended meanwhile, and its sessions
                self._on_loop(func, *args)

    def _on_loop(self, func: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self._loop_thread:  # it would wait for itself
            raise RuntimeError("tether.sync cannot be called from its own event loop's thread")
        return run_sync(func, *args, token=self._token)

    def submit(self, func: Callable[[], Awaitable[T]]) -> futures.Future[T] | None:
        """Run *func* on the loop, outside the scope (a stop); ``None`` once the block exited."""
        if self._portal is None and self._entered:
            return None
        return self._require_open("this call").start_task_soon(func)

    def run(self, func: Callable[[], Awaitable[T]], what: str) -> T:
        """Run *func* in the async scope; return its result. Ctrl-C cancels it (its streams
        stop through the cancel protocol), waits for that, then goes on; a scope cancelled
        under it raises ``DeadlineExceeded`` (deadline) or ``TetherError`` (``cancel()``)."""
        job = Job(func)
        job.start(self, what)
        wait(job.result, lambda exc: self.call(job.interrupt))
        try:
            return job.result.result()
        except futures.CancelledError:
            self.raise_cancelled(what)
            raise

    def expired(self) -> bool:
        """Whether the scope's deadline has passed (on the loop's clock)."""
        return self.call(self._expired)

    def cancel_reason(self) -> Literal["deadline", "scope_cancelled"]:
        """(On the loop.) Why the async scope cancelled what runs in it."""
        return "deadline" if self._expired() else "scope_cancelled"

    def _expired(self) -> bool:
        return self._async.cancel_called and anyio.current_time() >= self._async.deadline

    def raise_cancelled(self, what: str) -> None:
        """Raise ``DeadlineExceeded`` (deadline) or ``TetherError`` (``scope.cancel()``), if so."""
        if not self._async.cancel_called:
            return
        if self.expired():
            raise DeadlineExceeded(self._limit or 0.0)
        raise TetherError(f"{what}: the scope was cancelled (scope.cancel())")

    @property
    def limit(self) -> float | None:
        """The deadline as given, in seconds (``None`` for none)."""
        return self._limit


def open_scope(
    client: openai.OpenAI,
    *,
    deadline: float | None = None,
    grace: float = DEFAULT_GRACE,
    first_event_timeout: float = DEFAULT_FIRST_EVENT_TIMEOUT,
    max_concurrency: int | None = None,
    confirm: bool = True,
    journal: Journal | str | os.PathLike[str] | None = None,
    async_http_client: Any = None,
) -> Scope:
    """Open a scope for sync code: a deadline for everything inside, one portal for all of it.

    The sync face of [`tether.open_scope`][tether.open_scope], with the same arguments and
    defaults. When the deadline runs out, every guarded stream inside is closed and its
    response cancelled on the server (each within ``grace``), even while the body runs its
    own code; the stream being read raises [`DeadlineExceeded`][tether.DeadlineExceeded]
    (a ``TimeoutError``), and so does the block if the body let it exit normally. Its
    streams share one event-loop thread and one mirrored ``AsyncOpenAI`` (connections are
    reused), which makes each block cheaper than with a bare client. A block still open at
    the exit (in a generator its consumer kept) is stopped there (``"scope_exited"``).

    Args:
        client: An ``openai.OpenAI`` (or ``AzureOpenAI``).
        deadline: Seconds for the whole block, or ``None`` for no deadline.
        grace: Seconds each server-side cancel may take, retries included.
        first_event_timeout: Seconds to wait for ``response.created`` when opening a stream.
        max_concurrency: At most this many guarded streams open at once in the scope.
        confirm: Read back every response the server answered ``cancelled`` (one
            ``retrieve``, inside grace) to confirm it stopped; ``False`` trusts the answer.
        journal: Record every live background response in this [`Journal`][tether.journal.Journal]
            (or SQLite file), so that [`reap`][tether.reap] can cancel what a crash left.
        async_http_client: The ``httpx2.AsyncClient`` to use instead of mirroring the sync
            client's (for a custom transport or an explicit proxy); closed on exit.

    Returns:
        A [`tether.sync.Scope`][tether.sync.Scope], to use as ``with``.

    Raises:
        DeadlineExceeded: The deadline ran out (after every live response was cancelled).
        TypeError: *client* is not a sync ``openai.OpenAI`` (an ``AsyncOpenAI`` goes to
            ``tether.open_scope``).
        ValueError: A number is out of range (checked before anything is sent).

    Example:
        ```python
        with tether.sync.open_scope(client, deadline=30, grace=5) as scope:
            for question in questions:
                with tether.sync.guarded_stream(scope, model="gpt-5", input=question) as s:
                    print(s.get_final_response().output_text)
        ```

    Added in version 0.1.
    """
    return Scope(
        client,
        deadline=deadline,
        grace=grace,
        first_event_timeout=first_event_timeout,
        max_concurrency=max_concurrency,
        confirm=confirm,
        journal=journal,
        async_http_client=async_http_client,
    )
