"""Routing ``activity.heartbeat()`` through tether: temporalio's activity context.

A guarded stream in a Temporal activity heartbeats its checkpoint (the response id and the
last sequence number) on its own; a user's ``activity.heartbeat(*details)`` in the block
must not overwrite it. temporalio offers no public hook on heartbeats: its public
``activity.heartbeat`` calls the ``heartbeat`` callable of the current activity context
(temporalio ``activity.py``, ``_Context.current()`` and ``_Context.heartbeat``, a dataclass
field the worker sets per attempt). ``swap_heartbeat`` replaces that callable for the
block and gives it back (tests/test_compat.py pins the shape).
"""

# pyright: reportPrivateUsage=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["swap_heartbeat"]


class _ActivityContext(Protocol):
    heartbeat: Callable[..., None] | None


def _current() -> _ActivityContext:
    from temporalio import activity  # an optional dependency: imported when used

    context: Any = activity._Context.current()
    return context


def swap_heartbeat(
    heartbeat: Callable[..., None] | None, *, unless: Callable[..., None] | None = None
) -> Callable[..., None] | None:
    """Make *heartbeat* what ``activity.heartbeat()`` calls in the current activity; the one
    it replaces. With *unless*, nothing changes when the current one is not *unless* (a
    callable someone else installed meanwhile stays)."""
    context = _current()
    previous = context.heartbeat
    if unless is None or previous == unless:
        context.heartbeat = heartbeat
    return previous
