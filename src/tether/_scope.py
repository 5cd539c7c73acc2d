"""Scope: one client, one deadline, one grace, and every live response under them."""

from __future__ import annotations

import math
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from typing import TYPE_CHECKING, cast, final

import anyio

from ._compat import check_async_client
from ._critical import CtrlC, ctrl_c_cancels
from ._errors import DeadlineExceeded
from ._journal import Journal, close_if_opened, open_journal
from ._journal_lease import LeasedJournal
from ._lifecycle import State
from ._validate import check_positive, check_timeout

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncGenerator, Generator

    from openai import AsyncOpenAI

    from ._outcome import EndReason, StreamOutcome
    from ._protocol import ResponseGuard

__all__ = ["Scope", "as_scope", "open_scope"]

DEFAULT_GRACE = 5.0
DEFAULT_FIRST_EVENT_TIMEOUT = 10.0


@final
class Scope:
    """The budget and the bookkeeping shared by every stream opened in it.

    Made by [`open_scope`][tether.open_scope]; pass it to [`guarded_stream`][tether.guarded_stream],
    races and agents.

    Example:
        ```python
        async with tether.open_scope(client, deadline=30) as scope:
            print(f"{scope.remaining():.1f}s left")
        ```
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        grace: float = DEFAULT_GRACE,
        first_event_timeout: float = DEFAULT_FIRST_EVENT_TIMEOUT,
        max_concurrency: int | None = None,
        confirm: bool = True,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None:
        self.client: AsyncOpenAI = check_async_client(client)
        """The SDK client every stream of this scope uses."""
        self.grace: float = check_positive("grace", grace)
        """Seconds each server-side cancel may take, retries included."""
        self.first_event_timeout: float = check_positive("first_event_timeout", first_event_timeout)
        """Seconds to wait for ``response.created`` (under a shield: see the cancel protocol)."""
        if not isinstance(confirm, bool):
            raise TypeError(f"confirm must be a bool, got {confirm!r}")
        self.confirm = confirm
        """Read back every cancelled response (one ``retrieve``, within grace) to confirm the
        server stopped it: the API's cancel is best effort. ``False`` trusts the cancel's answer."""
        self.journal: Journal | None = None if journal is None else open_journal(journal)
        """Where live background responses are recorded, for [`reap`][tether.reap] after a crash."""
        self._given_journal = journal  # a URL or a path: the scope opened it, and closes it
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            )
        self.limiter: anyio.CapacityLimiter | None = (
            anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        )
        """Bounds the streams open at once in this scope (``max_concurrency``), or ``None``."""
        self._cancel_scope: anyio.CancelScope | None = None
        self._deadline: float = math.inf
        self._cancelled_explicitly = False
        self._live: set[ResponseGuard] = set()
        self._outcomes: list[StreamOutcome] = []
        self._exited = False  # its `async with open_scope(...)` block has ended
        self._parent: Scope | None = None  # the scope it stands for (for_client)

    @property
    def deadline(self) -> float:
        """The absolute deadline, on ``anyio.current_time()``'s clock (``inf`` if none)."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds left before the deadline (``inf`` if there is none; never negative)."""
        return max(0.0, self._deadline - anyio.current_time())

    def cancel(self) -> None:
        """Cancel everything running in the scope; each live response is cancelled on the server.

        The ``async with open_scope(...)`` block then exits quietly (like
        ``CancelScope.cancel()``), after the server-side cancels.
        """
        if self._cancel_scope is None:
            raise RuntimeError("this scope is not open: use it as `async with open_scope(...)`")
        if anyio.current_time() < self._deadline:  # a deadline already passed wins
            self._cancelled_explicitly = True
        self._cancel_scope.cancel("tether: scope cancelled")

    @property
    def cancel_called(self) -> bool:
        """Whether the scope was cancelled (explicitly, or by its deadline)."""
        return self._cancel_scope is not None and self._cancel_scope.cancel_called

    @property
    def live(self) -> int:
        """How many guarded streams are open in this scope right now (not counting those
        still queued for a ``max_concurrency`` slot)."""
        return sum(1 for guard in self._live if guard.admitted)

    @property
    def outcomes(self) -> tuple[StreamOutcome, ...]:
        """The outcome of every guarded stream that ended in this scope, in the order they ended."""
        return tuple(self._outcomes)

    @asynccontextmanager
    async def run(self, limit: float | None) -> AsyncGenerator[Scope]:
        """Open the scope with *limit* seconds (or none): what ``open_scope`` returns."""
        cancel_scope = anyio.CancelScope()
        try:
            # Ctrl-C on trio cancels the scope, and raises once the journal is let go (from
            # the journal's attach on: see _critical.py).
            with self._ctrl_c(cancel_scope) as ctrl_c:
                async with self.attach_journal():  # a fleet journal's lease and cancel listener
                    try:
                        with cancel_scope:
                            if limit is not None:
                                self._deadline = cancel_scope.deadline = (
                                    anyio.current_time() + limit
                                )
                            self._cancel_scope = cancel_scope
                            yield self
                    finally:
                        self._exited = True  # a stream opened from now on raises
                        await self.stop_abandoned()
                    if (
                        cancel_scope.cancelled_caught
                        and limit is not None
                        and not self._cancelled_explicitly
                        and not ctrl_c.interrupted
                    ):
                        raise DeadlineExceeded(limit)
        finally:
            if self.journal is not None:
                close_if_opened(self._given_journal, self.journal)

    @contextmanager
    def _ctrl_c(self, cancel_scope: anyio.CancelScope) -> Generator[CtrlC]:
        """The block, with Ctrl-C turned into *cancel_scope*'s cancellation on trio.

        Every stream stops with the reason ``interrupted``, then ``KeyboardInterrupt`` is
        raised at the exit. An exception that leaves the block meanwhile (the cancellation
        itself, or one a stop raised) is its ``__context__``, never hidden.
        """

        def interrupted() -> None:
            for guard in self._live:
                guard.mark_reason("interrupted")

        with ctrl_c_cancels(cancel_scope, interrupted) as ctrl_c:
            try:
                yield ctrl_c
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except BaseException:
                if ctrl_c.interrupted:
                    raise KeyboardInterrupt  # noqa: B904 - the exception is its __context__
                raise
            if ctrl_c.interrupted:
                raise KeyboardInterrupt

    def for_client(self, client: AsyncOpenAI) -> Scope:
        """This scope for another client (a race's ``requests[i]['client']``).

        The same grace, timeouts, ``confirm``, journal and ``max_concurrency`` bound, and the
        same book-keeping: its streams count in ``live`` and ``outcomes``, a
        ``request_cancel`` finds them, and this scope's exit stops them if they are left
        open.
        """
        sibling = Scope(
            client,
            grace=self.grace,
            first_event_timeout=self.first_event_timeout,
            confirm=self.confirm,
            journal=self.journal,  # journaled like the others: `tether reap` sees them
        )
        sibling.limiter = self.limiter  # one bound for the whole race
        sibling._live = self._live
        sibling._outcomes = self._outcomes
        sibling._parent = self  # its exit is this scope's
        return sibling

    def require_not_exited(self) -> None:
        """Raise ``RuntimeError`` if the scope's block has exited: a stream opened in it now
        would be bound to nothing (no deadline, no stop at the exit)."""
        if self._exited or (self._parent is not None and self._parent._exited):
            raise RuntimeError(
                "this scope's `async with tether.open_scope(...)` block has exited: "
                "open its streams inside the block"
            )

    def track(self, guard: ResponseGuard) -> None:
        """Count *guard* as live in this scope (called by the protocol as it opens)."""
        self._live.add(guard)

    def record(self, guard: ResponseGuard, outcome: StreamOutcome) -> None:
        """Record how *guard* ended (called by the protocol as it finishes)."""
        self._live.discard(guard)
        self._outcomes.append(outcome)

    def attach_journal(self) -> AbstractAsyncContextManager[object]:
        """The journal's lease and cancel listener, held for the scope's lifetime."""
        if self.journal is None:
            return nullcontext()
        if isinstance(self.journal, LeasedJournal):  # a built-in store: its exit within grace
            leased = cast("LeasedJournal", self.journal)  # narrowed to Journal's attach
            return leased.attach(self.on_cancel_requested, grace=self.grace)
        return self.journal.attach(self.on_cancel_requested)

    async def on_cancel_requested(self, key: str) -> None:
        """A cancel was requested for *key* (``request_cancel``): stop its live streams."""
        await _stop_each([guard for guard in self._live if guard.key == key], "cancel_requested")

    async def stop_abandoned(self) -> None:
        """(The scope's exit.) Stop the streams of this scope whose blocks are still open.

        A stream's block normally ends inside the scope's. One that does not was left
        elsewhere: in an async generator its consumer stopped iterating and has not closed
        yet (it is closed when it is garbage collected, if ever), or in a task that runs
        past the scope. Its response would go on generating after the scope: so the scope
        stops it on its way out (``scope_exited``), under a shield and bounded like any
        stop. Its block, when it ends, finds the stream stopped.
        """
        abandoned = [guard for guard in self._live if guard.state < State.STOPPING]
        if abandoned:  # else no checkpoint at all: the common case
            with anyio.CancelScope(shield=True):  # each stop is bounded (grace, the open's)
                await _stop_each(abandoned, "scope_exited")


async def _stop_each(guards: list[ResponseGuard], reason: EndReason) -> None:
    """Stop *guards* for *reason*, concurrently, each through the one stop path: an open in
    flight is waited for until its id is known, a queued one gives up and sends nothing, and
    one whose response finished is closed and keeps its own reason (``completed``...)."""

    async def stop(guard: ResponseGuard) -> None:
        if not guard.finished:  # else its stop only closes: nothing to cancel
            guard.mark_reason(reason)
            await guard.wait_opened("cancel")
        await guard.stop(guard.reason_for(None))

    async with anyio.create_task_group() as tg:
        for guard in guards:
            tg.start_soon(stop, guard)


def as_scope(scope: Scope | AsyncOpenAI, argument: str = "scope") -> Scope:
    """*scope* itself, or a fresh scope with no deadline for a bare ``AsyncOpenAI``."""
    if isinstance(scope, Scope):
        return scope
    return Scope(check_async_client(scope, argument=argument))


def open_scope(
    client: AsyncOpenAI,
    *,
    deadline: float | None = None,
    grace: float = DEFAULT_GRACE,
    first_event_timeout: float = DEFAULT_FIRST_EVENT_TIMEOUT,
    max_concurrency: int | None = None,
    confirm: bool = True,
    journal: Journal | str | os.PathLike[str] | None = None,
) -> AbstractAsyncContextManager[Scope]:
    """Open a scope: a deadline for everything inside, and a grace for each server-side cancel.

    When the deadline runs out, every guarded stream inside is closed and its response
    cancelled on the server (each within ``grace``), then the block raises
    [`DeadlineExceeded`][tether.DeadlineExceeded], a ``TimeoutError``, like
    ``anyio.fail_after``. An exception raised in the body propagates unchanged: the scope does
    not wrap it in an ``ExceptionGroup``. A stream whose block is still open when the scope's
    block ends (in an async generator left unclosed, in a task that runs past the scope) is
    stopped at the exit, like the others (``reason="scope_exited"``); a scope whose block
    has ended opens no more streams.

    Args:
        client: An ``openai.AsyncOpenAI`` (or ``AsyncAzureOpenAI``).
        deadline: Seconds for the whole block, or ``None`` for no deadline.
        grace: Seconds each server-side cancel may take, retries included.
        first_event_timeout: Seconds to wait for ``response.created`` when opening a stream.
        max_concurrency: At most this many guarded streams open at once in the scope.
        confirm: Read back every response the server answered ``cancelled`` (one
            ``retrieve``, inside grace) to confirm it stopped: the API's cancel is best effort.
            ``False`` trusts the answer: one request less per stop (what it saves:
            docs/benchmarks.md), and a cancel the server did not honour goes unnoticed.
        journal: Record every live background response in this [`Journal`][tether.journal.Journal]
            (or a ``redis://`` / ``postgresql://`` URL, or an SQLite path: see
            [`open_journal`][tether.open_journal]), so that [`reap`][tether.reap] can cancel
            what a crash left and [`request_cancel`][tether.request_cancel] can stop a key.

    Returns:
        An async context manager yielding the [`Scope`][tether.Scope].

    Raises:
        DeadlineExceeded: The deadline ran out (after every live response was cancelled).
        TypeError: *client* is not an ``AsyncOpenAI``.
        ValueError: A number is out of range (checked before anything is sent).

    Example:
        ```python
        async with tether.open_scope(client, deadline=30, grace=5) as scope:
            async with tether.guarded_stream(scope, model="gpt-5", input="Hi") as stream:
                print(await stream.get_final_response())
        ```

    Added in version 0.1.
    """
    # Everything is checked here, when open_scope() is called: before any await or request.
    limit = check_timeout("deadline", deadline)
    scope = Scope(
        client,
        grace=grace,
        first_event_timeout=first_event_timeout,
        max_concurrency=max_concurrency,
        confirm=confirm,
        journal=journal,
    )
    return scope.run(limit)
