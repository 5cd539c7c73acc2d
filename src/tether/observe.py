"""Progress events: one hook for streams, races and agents (live views, tracing, dashboards).

tether tells observers what happens as it happens: a stream starts, gets its id, is
cancelled on the server, ends; a race starts attempts and decides; an agent runs turns and
tools. The CLI's live view, the OpenTelemetry spans (``tether.otel``) and your own
dashboards hang on this one mechanism.

An observer is any callable taking one event. Register it with
[`observing`][tether.observe.observing], for one block of code and the tasks it starts, or
with ``process_wide=True`` for every task and thread while the block runs (around an
application's ``main``). Observers are called synchronously, in
the task where the event happens, so they must be quick and must not block; an observer
that raises is logged and otherwise ignored: it never breaks the stream it watches.
With no observer registered, an event costs one check of an empty tuple.

Every event carries an ``id`` (unique in the process) for the thing it is about and a
``parent``: the id of the race attempt, agent turn or tool call it runs under, or ``None``.
So a stream opened by a race's attempt has ``parent`` = that attempt's id, and an attempt's
``parent`` is its race's id: a tree, whatever the backend and however the tasks nest.

Example:
    ```python
    import tether.observe

    def show(event):
        if isinstance(event, tether.observe.StreamEvent.Ended):
            print(event.outcome.reason, event.outcome.receipt)

    with tether.observe.observing(show):
        async with tether.guarded_stream(scope, model="m", input="hi") as stream:
            ...
    ```
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias, final

import attrs

from ._validate import check_bool

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from ._outcome import CancelReceipt, StreamOutcome

__all__ = [
    "Observer",
    "StreamEvent",
    "observing",
]

_log = logging.getLogger("tether")


@final
class StreamEvent:
    """A guarded stream's progress events, one record per step, in this order.

    ``Started`` (the request is about to go), ``Opened`` (``response.created``: it has an id),
    then, if it is stopped early, ``CancelStarted`` and ``CancelEnded`` (and ``CancelOverruled``
    if the server read back otherwise), and last ``Ended`` with the outcome. A namespace: the
    records are its attributes (``StreamEvent.Ended``); it is not their base class.

    Example:
        ```python
        from tether.observe import StreamEvent

        def show(event: object) -> None:
            if isinstance(event, StreamEvent.Ended):
                print(event.outcome.reason)
        ```
    """

    __slots__ = ()

    @final
    @attrs.frozen(kw_only=True)
    class Started:
        """A guarded stream is about to send its request (or resume a detached response).

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.Started):
                print(event.model, event.stream.response_id)  # None: not known yet
            ```
        """

        id: int
        """This stream's id in events (not the response's id)."""
        parent: int | None
        """The race attempt, agent turn... it runs under, if any."""
        model: str | None
        """The model asked for."""
        background: bool
        """Whether it runs in background mode."""
        key: str | None
        """The job key it was opened with, if any."""
        resumed: bool
        """Whether it resumes a detached response instead of creating one."""
        stream: Any = attrs.field(eq=False, repr=False)
        """The live [`GuardedStream`][tether.GuardedStream]: read ``response_id``, ``status``,
        ``deltas`` as it goes (for a live view)."""

    @final
    @attrs.frozen(kw_only=True)
    class Opened:
        """``response.created`` arrived: the response has an id.

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.Opened):
                print("started", event.response_id)
            ```
        """

        id: int
        """The stream's id in events."""
        response_id: str
        """The response's id on the server."""

    @final
    @attrs.frozen(kw_only=True)
    class CancelStarted:
        """The stream is being stopped early: its ``POST /responses/{id}/cancel`` is about to go.

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.CancelStarted):
                print("cancelling", event.response_id, "because", event.reason)
            ```
        """

        id: int
        """The stream's id in events."""
        response_id: str
        """The response being cancelled."""
        reason: str
        """Why (a ``StreamOutcome.Reason``: ``break``, ``deadline``, ``race_lost``...)."""

    @final
    @attrs.frozen(kw_only=True)
    class CancelEnded:
        """The server-side cancel is over: confirmed, or given up on within grace.

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.CancelEnded) and not event.receipt.stopped:
                alert(event.receipt)
            ```
        """

        id: int
        """The stream's id in events."""
        receipt: CancelReceipt
        """What the server said."""

    @final
    @attrs.frozen(kw_only=True)
    class CancelOverruled:
        """The server answered ``cancelled``, then read back otherwise: the cancel was best effort
        and not honoured (the response went on, and ended ``completed``, or still generated when
        grace ran out). Billed tokens nobody read: alert on it.

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.CancelOverruled):
                print("not honoured:", event.receipt.response_id, event.receipt.status)
            ```
        """

        id: int
        """The stream's id in events."""
        receipt: CancelReceipt
        """The receipt as read back (``status`` is what the server finally reported)."""

    @final
    @attrs.frozen(kw_only=True)
    class Ended:
        """The guarded stream's block is over; its outcome is final.

        Example:
            ```python
            if isinstance(event, tether.observe.StreamEvent.Ended):
                print(event.outcome.reason, event.outcome.deltas)
            ```
        """

        id: int
        """The stream's id in events."""
        outcome: StreamOutcome
        """How it ended."""


Observer: TypeAlias = "Callable[[Any], object]"
"""A callable taking one event; its return value is ignored.

Events are the records of [`StreamEvent`][tether.observe.StreamEvent],
[`RaceEvent`][tether.races.RaceEvent] and [`AgentEvent`][tether.agents.AgentEvent]:
annotate the parameter ``object`` and dispatch on their type."""

_global: tuple[Observer, ...] = ()
_local: ContextVar[tuple[Observer, ...]] = ContextVar("tether_observers", default=())
_parent: ContextVar[int | None] = ContextVar("tether_observe_parent", default=None)
_ids = itertools.count(1)


def add_observer(observer: Observer) -> None:
    """Call *observer* with every event in this process, until ``remove_observer``.

    Not exported: users say ``observing(observer, process_wide=True)``, which cannot forget
    the removal; ``tether.otel.instrument`` registers with it (its ``uninstrument`` removes).

    Raises:
        TypeError: *observer* is not callable.
    """
    global _global
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {observer!r}")
    _global = (*_global, observer)


def remove_observer(observer: Observer) -> None:
    """Stop calling an observer added with ``add_observer``.

    Raises:
        ValueError: It was not added.
    """
    global _global
    if observer not in _global:
        raise ValueError(f"observer {observer!r} was not added")
    index = _global.index(observer)
    _global = _global[:index] + _global[index + 1 :]


@contextlib.contextmanager
def observing(observer: Observer, *, process_wide: bool = False) -> Generator[None]:
    """Call *observer* with the events of this block, and of the tasks started inside it.

    Scoped with a context variable: other tasks and threads do not see it. With
    ``process_wide=True`` it sees every event of the process (every task, every thread,
    ``tether.sync``'s event loop thread included) while the block runs: wrap an
    application's ``main`` in it.

    Args:
        observer: A callable taking one event.
        process_wide: Watch the whole process, not only this block's tasks.

    Raises:
        TypeError: *observer* is not callable, or *process_wide* not a bool.

    Example:
        ```python
        events = []
        with tether.observe.observing(events.append):
            await tether.race(client, requests)

        with tether.observe.observing(print, process_wide=True):
            anyio.run(main)
        ```
    """
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {observer!r}")
    if check_bool("process_wide", process_wide):
        add_observer(observer)
        try:
            yield
        finally:
            remove_observer(observer)
        return
    token = _local.set((*_local.get(), observer))
    try:
        yield
    finally:
        _local.reset(token)


def watched() -> bool:
    """Whether any observer would see an event emitted here (skip building events if not)."""
    return bool(_global) or bool(_local.get())


def new_id() -> int:
    """A fresh id for a stream, race, attempt, agent, turn or tool call."""
    return next(_ids)


def current_parent() -> int | None:
    """The id the next stream, attempt or turn started in this task runs under."""
    return _parent.get()


@contextlib.contextmanager
def parent(node: int) -> Generator[None]:
    """Run a block (and the tasks it starts) under *node*: what it starts is *node*'s child."""
    token = _parent.set(node)
    try:
        yield
    finally:
        _parent.reset(token)


def emit(event: object) -> None:
    """Hand *event* to every observer; one that raises is logged, never propagated."""
    for observer in (*_global, *_local.get()):
        try:
            observer(event)
        except Exception:
            _log.exception("tether observer %r failed on %r", observer, event)
