"""tether on Temporal: a workflow's cancel stops the model, a dead worker regenerates nothing.

Inside a Temporal activity, [`guarded_stream`][tether.temporal.guarded_stream] opens a
background stream guarded like [`tether.guarded_stream`][tether.guarded_stream], and keeps
a [`Checkpoint`][tether.temporal.Checkpoint] (the response id, the last sequence number) in
the activity's heartbeat details, one per stream the activity opens. A cancelled activity
cancels its response on the server within ``grace``; a retried one resumes the responses
its last heartbeat names instead of creating them again. [`run_agent`][tether.temporal.run_agent]
is ``tether.run_agent`` with every turn such a stream. In a sync activity (a plain ``def``),
``guarded_stream`` given an ``openai.OpenAI`` returns a
[`SyncTemporalStream`][tether.temporal.SyncTemporalStream], checkpointed alike. Needs the
``tether[temporal]`` extra (``temporalio``). See the "Running on Temporal" page of the docs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

import openai

from ._agent import run_checked
from ._agent_request import check_agent_request
from ._build import StreamOptions, build_guard
from ._public import claim as _claim
from ._scope import DEFAULT_FIRST_EVENT_TIMEOUT, DEFAULT_GRACE, Scope
from ._sync_scope import Scope as SyncScope
from ._temporal_canceller import ResponseCanceller
from ._temporal_checkpoint import Checkpoint
from ._temporal_context import (
    NotInActivity,
    async_scope,
    attempt_left,
    beat_interval,
    check_context,
)
from ._temporal_heartbeat import Heartbeats
from ._temporal_place import Place, ResumeFailed
from ._temporal_retry import NextAttempt
from ._temporal_stream import TemporalStream
from ._temporal_sync import SyncTemporalStream
from ._validate import check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from openai import AsyncOpenAI
    from openai.types.responses import ResponseInputParam

    from ._agent_events import AgentResult
    from ._agent_request import OnToolError, TurnStream
    from ._tools import AgentTool

__all__ = [
    "Checkpoint",
    "NotInActivity",
    "ResponseCanceller",
    "ResumeFailed",
    "SyncTemporalStream",
    "TemporalStream",
    "guarded_stream",
    "run_agent",
]


@overload
def guarded_stream(
    scope: Scope | AsyncOpenAI,
    *,
    resume_from: Literal["start", "checkpoint"] = "start",
    on_lost: Literal["raise", "restart"] = "raise",
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    key: str | None = None,
    **create_kwargs: Any,
) -> TemporalStream: ...


@overload
def guarded_stream(
    scope: openai.OpenAI,
    *,
    resume_from: Literal["start", "checkpoint"] = "start",
    on_lost: Literal["raise", "restart"] = "raise",
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    key: str | None = None,
    **create_kwargs: Any,
) -> SyncTemporalStream: ...


def guarded_stream(
    scope: Scope | AsyncOpenAI | openai.OpenAI,
    *,
    resume_from: Literal["start", "checkpoint"] = "start",
    on_lost: Literal["raise", "restart"] = "raise",
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    key: str | None = None,
    **create_kwargs: Any,
) -> TemporalStream | SyncTemporalStream:
    """In an activity: a guarded background stream, checkpointed in the activity's heartbeats.

    On entry, a retried attempt whose last heartbeat names a response in this stream's place
    (the activity's first stream, its second...: the order in which they enter) checks it
    and resumes it (``retrieve(id, stream=True)``) instead of creating a second one; otherwise a new
    background response is created, tagged with ``metadata`` (``temporal_workflow_id``,
    ``temporal_activity_id``, ``temporal_attempt``) and recorded in the scope's journal if it
    has one. Its id is heartbeated as soon as ``response.created`` is read, then heartbeats
    go on at half the SDK's throttle (0.8 x ``heartbeat_timeout``) whether events come or
    not. The response belongs to the activity, not to one attempt: when Temporal ends the
    attempt and will run another (a worker shutdown, a pause, a timeout, tether's
    own deadline at the attempt's start-to-close), the stream is closed and the response
    left for that attempt to resume (outcome reason ``detached``), once Temporal holds a
    checkpoint naming it. Otherwise (the workflow's cancel, an activity reset, the last
    attempt, a closed workflow, no checkpoint yet, or the code itself ending the block: an exception,
    ``deadline=``, a ``break``) it is cancelled on the server within ``grace``, and the
    last checkpoint says so: a retry then starts a new response. Either way, what ended
    the block goes on.

    In a sync activity (a plain ``def``, run in a thread of the worker's
    ``activity_executor``), give it the sync ``openai.OpenAI``: it returns a
    [`SyncTemporalStream`][tether.temporal.SyncTemporalStream], used as ``with``, checkpointed
    and resumed alike, on a ``tether.sync`` portal of its own. Temporal's ``CancelledError``,
    raised into the activity's thread, stops it wherever it lands. A sync activity has no
    Temporal client to ask whether a checkpoint reached Temporal, so a graceful end (a
    worker shutdown, a timeout) hands over only a response the attempt resumed; a new one
    is cancelled (a dead worker's is resumed all the same).

    Args:
        scope: A [`Scope`][tether.Scope] or an ``openai.AsyncOpenAI`` in an ``async def``
            activity; an ``openai.OpenAI`` in a sync activity.
        resume_from: ``"start"``: a resumed response replays from ``sequence_number`` 0, so
            the attempt sees every event once. ``"checkpoint"``: from after the checkpoint's
            sequence number, for activities that keep their own progress.
        on_lost: What a retry does when its checkpoint's response was cancelled or is
            gone: ``"raise"`` [`ResumeFailed`][tether.temporal.ResumeFailed]
            (non-retryable), or ``"restart"`` a new response (its tokens are generated again).
            A response the previous attempt cancelled itself, or one that failed on the
            server, always starts anew.
        grace: Seconds the server-side cancel may take (default: the scope's).
        first_event_timeout: Seconds to wait for ``response.created`` (default: the scope's).
        first_token_timeout: Seconds from the request to the first output delta, or ``None``
            (a new response's; a resumed one had its first token in an earlier attempt).
        idle_timeout: Seconds without any event, or ``None``.
        deadline: Seconds for the whole block, or ``None``; the attempt's own end applies too.
        key: A job key for the scope's journal (default: ``temporal:<workflow id>:<activity id>``).
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`TemporalStream`][tether.temporal.TemporalStream], to use as ``async with``; with
        an ``openai.OpenAI``, a [`SyncTemporalStream`][tether.temporal.SyncTemporalStream],
        to use as ``with``.

    Raises:
        NotInActivity: Called outside an activity, in workflow code, or with an async
            client in a sync activity (before any request).
        ResumeFailed: On entry, the checkpoint's response cannot be resumed.
        DeadlineExceeded: The attempt's deadline (or ``deadline``) ran out; the stream was
            stopped first (handed to the next attempt, or cancelled if none follows).
        TypeError: *scope* is a sync ``openai.OpenAI`` in an ``async def`` activity, or a
            ``tether.sync.Scope``.
        ValueError: ``background=False`` or ``stream=`` given, a timeout out of range.

    Example:
        ```python
        @activity.defn
        async def essay(prompt: str) -> str:
            async with tether.temporal.guarded_stream(client, model="gpt-5", input=prompt) as s:
                return (await s.get_final_response()).output_text

        @activity.defn
        def sync_essay(prompt: str) -> str:  # a sync activity, with an openai.OpenAI
            with tether.temporal.guarded_stream(sync_client, model="gpt-5", input=prompt) as s:
                return s.get_final_response().output_text
        ```

    Added in version 0.2.
    """
    sync = scope if isinstance(scope, (openai.OpenAI, SyncScope)) else None  # a sync activity's
    info = check_context(sync=sync)
    if create_kwargs.pop("background", True) is not True:
        raise ValueError(
            "tether.temporal.guarded_stream always runs background responses: "
            "do not pass background=False"
        )
    if resume_from not in ("start", "checkpoint"):
        raise ValueError(f"resume_from must be 'start' or 'checkpoint', got {resume_from!r}")
    if on_lost not in ("raise", "restart"):
        raise ValueError(f"on_lost must be 'raise' or 'restart', got {on_lost!r}")
    limit = check_timeout("deadline", deadline)
    left = attempt_end = attempt_left(info)
    if limit is not None:
        left = limit if left is None else min(left, limit)
    metadata: Any = create_kwargs.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {metadata!r}")
    create_kwargs["metadata"] = {
        **metadata,
        "temporal_workflow_id": info.workflow_id or "",
        "temporal_activity_id": info.activity_id,
        "temporal_attempt": str(info.attempt),
    }
    portal: SyncScope | None = None
    if isinstance(scope, openai.OpenAI):  # a sync activity: a portal of its own
        portal = SyncScope(
            scope,
            deadline=left,
            grace=DEFAULT_GRACE,
            first_event_timeout=DEFAULT_FIRST_EVENT_TIMEOUT,
            max_concurrency=None,
            confirm=True,
            journal=None,
            instead="tether.temporal.guarded_stream",
        )
        the_scope = portal.async_scope
    else:
        the_scope = async_scope(scope)
    options: dict[str, Any] = {
        "grace": grace,
        "first_event_timeout": first_event_timeout,
        "idle_timeout": idle_timeout,
    }
    own = StreamOptions(
        key=key or f"temporal:{info.workflow_id}:{info.activity_id}",
        first_token_timeout=first_token_timeout,  # a resumed response has had its first token
        **options,
    )
    place = Place(
        the_scope,
        build_guard(the_scope, own, create_kwargs),
        options,
        beats=Heartbeats.of_attempt(),
        resume_from=resume_from,
        on_lost=on_lost,
        next_attempt=NextAttempt(info, attempt_end),
    )
    if portal is not None:
        return SyncTemporalStream(place, portal, beat_every=beat_interval(info))
    return TemporalStream(place, left=left, beat_every=beat_interval(info))


async def run_agent(
    scope: Scope | AsyncOpenAI,
    *,
    model: str,
    input: str | ResponseInputParam,  # the Responses API's own name
    tools: Sequence[AgentTool[..., Any] | Callable[..., Any]],
    instructions: str | None = None,
    max_turns: int = 10,
    max_tokens: int | None = None,
    on_tool_error: OnToolError = "report",
    raise_on_deadline: bool = False,
    reserve: float | None = None,
    on_lost: Literal["raise", "restart"] = "raise",
    **create_kwargs: Any,
) -> AgentResult:
    """In an activity: [`tether.run_agent`][tether.run_agent], each turn checkpointed.

    The same function-calling loop, under the scope's deadline, with every turn's response
    streamed by [`guarded_stream`][tether.temporal.guarded_stream]: a background response,
    checkpointed in the activity's heartbeats, cancelled on the server when the workflow
    cancels the activity. Heartbeats go on while the tools run, so a tool longer than the
    heartbeat timeout does not time the attempt out. On a retry, the loop runs again and each turn gets back the
    response of its place: a completed turn is replayed (no request to create anything,
    no token paid twice), the turn that was interrupted is resumed, and the turns after it
    are new. The tools of a replayed turn run again: as with any Temporal activity, make
    them idempotent, or keep their results where a retry finds them.

    Args:
        scope: A [`Scope`][tether.Scope] (its deadline is the loop's budget), or an
            ``openai.AsyncOpenAI`` for none; each turn also ends at the attempt's end.
        model: The model of every turn.
        input: The first turn's input: a string or a list of input items.
        tools: [`agent_tool`][tether.agent_tool]s, or plain functions.
        instructions: The system instructions, sent with every turn.
        max_turns: At most this many responses (see ``tether.run_agent``).
        max_tokens: Stop once the completed turns used this many tokens.
        on_tool_error: ``"report"``, ``"stop"`` or ``"raise"`` (see ``tether.run_agent``).
        raise_on_deadline: Let the scope's deadline cancel the loop instead of returning.
        reserve: Seconds before the scope's deadline at which the loop stops.
        on_lost: What a retried turn does when its checkpoint's response was cancelled
            or is gone (see ``guarded_stream``).
        **create_kwargs: More arguments for every turn's request and stream (``grace``,
            ``idle_timeout``...).

    Returns:
        An [`AgentResult`][tether.agents.AgentResult]: the final text, every turn, the stop reason.

    Raises:
        NotInActivity: Called outside an async activity (before any request).
        ResumeFailed: A retried turn's checkpointed response can no longer be resumed.
        DeadlineExceeded: The attempt ended during a turn (its response handed to the next
            attempt while attempts are left), or ``raise_on_deadline``.
        ResponseNotCompleted: A turn's response failed.
        TypeError: A bad argument type, or a sync client.
        ValueError: An argument out of range (checked before any request).

    Example:
        ```python
        @activity.defn
        async def weather(question: str) -> str:
            result = await tether.temporal.run_agent(
                client, model="gpt-5", input=question, tools=[get_weather], grace=5
            )
            return result.output_text
        ```

    Added in version 0.2.
    """
    info = check_context("run_agent")
    if on_lost not in ("raise", "restart"):
        raise ValueError(f"on_lost must be 'raise' or 'restart', got {on_lost!r}")
    the_scope = async_scope(scope)
    checked = check_agent_request(
        model=model,
        first_input=input,
        tools=tools,
        instructions=instructions,
        max_turns=max_turns,
        max_tokens=max_tokens,
        on_tool_error=on_tool_error,
        raise_on_deadline=raise_on_deadline,
        reserve=reserve,
        create_kwargs=create_kwargs,
    )

    def open_turn(turn_scope: Scope, request: dict[str, Any]) -> TurnStream:
        return guarded_stream(turn_scope, on_lost=on_lost, **request)

    async with Heartbeats.of_attempt().kept(beat_interval(info)):  # tools run between turns
        return await run_checked(the_scope, checked, input, open_turn)


_claim(__name__, globals(), __all__)
