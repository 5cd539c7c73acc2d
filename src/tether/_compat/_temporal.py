"""Routing ``activity.heartbeat()`` through tether: temporalio's activity context.

A guarded stream in a Temporal activity heartbeats its checkpoint (the response id and the
last sequence number) on its own; a user's ``activity.heartbeat(*details)`` in the block
must not overwrite it. temporalio offers no public hook on heartbeats: its public
``activity.heartbeat`` calls the ``heartbeat`` callable of the current activity context
(temporalio ``activity.py``, ``_Context.current()`` and ``_Context.heartbeat``, a dataclass
field the worker sets per attempt). ``installed_heartbeat`` reads that callable and
``swap_heartbeat`` replaces it: tether routes the attempt's heartbeats through its own
(tests/test_compat.py pins the shape).
"""

# pyright: reportPrivateUsage=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["installed_heartbeat", "swap_heartbeat"]


class _ActivityContext(Protocol):
    heartbeat: Callable[..., None] | None


def _current() -> _ActivityContext:
    from temporalio import activity  # an optional dependency: imported when used

    context: Any = activity._Context.current()
    return context


def installed_heartbeat() -> Callable[..., None] | None:
    """What ``activity.heartbeat()`` calls in the current activity (``None`` before the
    worker's interceptors set it up)."""
    return _current().heartbeat


def swap_heartbeat(heartbeat: Callable[..., None] | None) -> Callable[..., None] | None:
    """Make *heartbeat* what ``activity.heartbeat()`` calls in the current activity (the
    attempt's context: it goes with the attempt); the one it replaces."""
    context = _current()
    previous = context.heartbeat
    context.heartbeat = heartbeat
    return previous
