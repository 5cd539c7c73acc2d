"""Where ``tether.temporal`` runs: the activity's context, checked; the attempt's clock.

``guarded_stream`` and ``run_agent`` (``temporal.py``) check where they are called before
any request: in an activity, not in workflow code, with a client that fits the activity's
kind (an async one in an ``async def`` activity, a sync ``openai.OpenAI`` in a sync one).
The attempt's end (start-to-close, schedule-to-close) and the beat interval come from
``activity.info()``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
import openai
from temporalio import activity, workflow

from ._errors import TetherError
from ._scope import Scope, as_scope
from ._sync_scope import Scope as SyncScope

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["NotInActivity", "async_scope", "attempt_left", "beat_interval", "check_context"]

_MAX_THROTTLE = 60.0  # the worker's max_heartbeat_throttle_interval default (seconds)
_DEFAULT_THROTTLE = 30.0  # its default_heartbeat_throttle_interval, with no heartbeat timeout


class NotInActivity(TetherError, RuntimeError):
    """``tether.temporal.guarded_stream`` was called where no activity can stream.

    Outside any activity, in workflow code, or in a sync activity (one the worker runs in a
    thread of its ``activity_executor``) with an async client: an ``async def`` activity
    streams with an ``openai.AsyncOpenAI`` (or a ``tether.Scope``), a sync one with an
    ``openai.OpenAI``. ``tether.temporal.run_agent`` runs in ``async def`` activities only.

    Raised before any request. Workflow code must stay deterministic (no network, no clock):
    stream in an activity and execute it from the workflow; outside Temporal, use
    [`tether.guarded_stream`][tether.guarded_stream].

    Example:
        ```python
        try:
            tether.temporal.guarded_stream(client, model="fast", input="Hi")
        except tether.temporal.NotInActivity as exc:
            print(exc)  # ... use tether.guarded_stream() instead
        ```
    """


def check_context(what: str = "guarded_stream", *, sync: object = None) -> activity.Info:
    """The activity's info; raises unless called in an activity whose kind fits the client:
    an async client in an ``async def`` activity, a sync one (*sync*, given) in a sync one."""
    if workflow.in_workflow():
        raise NotInActivity(
            f"tether.temporal.{what}() was called in workflow code: a stream does "
            "network I/O and reads the clock, which Temporal's deterministic workflow code "
            "must not; stream in an activity (@activity.defn) and run it with "
            "workflow.execute_activity()"
        )
    if not activity.in_activity():
        raise NotInActivity(
            f"tether.temporal.{what}() runs inside a Temporal activity (@activity.defn); "
            f"outside one, use tether.{what}() instead"
        )
    try:
        anyio.get_current_task()
    except RuntimeError:  # no event loop in this thread (anyio's NoEventLoopError)
        if sync is None:
            raise NotInActivity(
                f"tether.temporal.{what}() was called in a sync activity (run by the "
                "worker's activity_executor, in a thread) with an async client: "
                + (
                    "give it the sync openai.OpenAI, or make the activity `async def`"
                    if what == "guarded_stream"
                    else "it runs in async activities: make the activity `async def`"
                )
            ) from None
    else:
        if sync is not None:
            raise TypeError(
                "scope must be an openai.AsyncOpenAI or a tether.Scope in an async "
                f"activity, got a sync {type(sync).__name__}: it would block the worker's "
                "event loop (a sync client streams in a sync activity, a plain `def`)"
            )
    return activity.info()


def async_scope(scope: Scope | AsyncOpenAI) -> Scope:
    if isinstance(scope, openai.OpenAI):
        raise TypeError(
            f"scope must be an openai.AsyncOpenAI or a tether.Scope, got a sync "
            f"{type(scope).__name__}: tether.temporal.run_agent runs in async activities "
            "(`async def`); give the activity an openai.AsyncOpenAI"
        )
    if isinstance(scope, SyncScope):
        raise TypeError(
            f"scope must be an openai.AsyncOpenAI or a tether.Scope, got {scope!r}: in a "
            "sync activity, pass the openai.OpenAI itself (the stream opens a portal of its "
            "own, whose deadline is the attempt's end)"
        )
    return as_scope(scope)


def attempt_left(info: activity.Info) -> float | None:
    """Seconds until the server ends this attempt (start-to-close, schedule-to-close)."""
    ends: list[datetime] = []
    if info.start_to_close_timeout:
        ends.append(info.started_time + info.start_to_close_timeout)
    if info.schedule_to_close_timeout:
        ends.append(info.scheduled_time + info.schedule_to_close_timeout)
    if not ends:
        return None
    return max((min(ends) - datetime.now(timezone.utc)).total_seconds(), 1e-3)


def beat_interval(info: activity.Info) -> float:
    """Half the SDK's throttle (0.8 x heartbeat_timeout): one heartbeat always pending."""
    timeout = info.heartbeat_timeout
    throttle = min(timeout.total_seconds() * 0.8, _MAX_THROTTLE) if timeout else _DEFAULT_THROTTLE
    return max(throttle / 2, 0.01)
