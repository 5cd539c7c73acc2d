"""The records tether reports: how a cancel went, and how a stream ended.

A race's records (``RaceAttempt``, ``RaceResult``) live in ``_race_records.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, final

import attrs

if TYPE_CHECKING:
    from openai.types.responses import ResponseUsage

__all__ = [
    "CancelReceipt",
    "DetachedResponse",
    "EndReason",
    "StreamOutcome",
]

EndReason = Literal[
    "completed",
    "failed",
    "incomplete",
    "cancelled",
    "explicit",
    "break",
    "exception",
    "scope_cancelled",
    "scope_exited",
    "deadline",
    "stalled",
    "interrupted",
    "race_lost",
    "detached",
    "cancel_requested",
]
"""Why a guarded stream stopped: the type of ``StreamOutcome.reason``, public as
``StreamOutcome.Reason``."""

FINISHED_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})


@final
@attrs.frozen(kw_only=True)
class CancelReceipt:
    """What the server said when tether stopped a response.

    Example:
        ```python
        receipt = await stream.cancel()
        assert receipt.stopped, receipt.error
        print(receipt.status, receipt.attempts, f"{receipt.latency:.3f}s")
        ```
    """

    response_id: str | None
    """The response that was stopped (``None`` if it never got an id)."""
    kind: Literal["server", "disconnect", "none"]
    """``server``: ``POST /responses/{id}/cancel`` was sent. ``disconnect``: a non-background
    response, stopped by closing its connection (the API has no other way). ``none``: the
    response had already finished, nothing to cancel."""
    status: str | None
    """The status the server confirmed: ``cancelled``, or ``completed``/``failed``/``incomplete``
    if it finished first, ``gone`` for a 404; ``None`` if unknown (no answer within grace, or a
    disconnect)."""
    attempts: int = 0
    """Cancel requests sent (retries included)."""
    latency: float = 0.0
    """Seconds from the first cancel request to the server's answer (or to giving up)."""
    error: str | None = None
    """Why the cancel could not be confirmed, if it could not."""
    confirmed: bool = False
    """Whether ``status`` was read back from the server after the cancel (its final word).

    The API's cancel is best effort: it may answer ``cancelled`` for a response that goes
    on generating and ends ``completed`` (billed). A ``cancelled`` answer alone is
    ``confirmed=False``; the stop then reads the response back within what is left of
    grace, and the receipt says what the server finally reported (``completed`` for a
    cancel that was not honoured; still ``in_progress``, not ``stopped``, when grace ran
    out first: the journal then keeps the entry for ``reap``)."""
    output_tokens: int | None = None
    """The output tokens the server reported generating (``usage.output_tokens``) when the
    stop read the response back: what the stopped response cost. ``0`` when the server
    reported no usage but no output item either (stopped before the model began one: it
    generated nothing). ``None`` when it was not read back (``confirm=False``), or when it
    had begun an output item and reported no usage (the live API's answer for a cancelled
    response): unknown."""

    @property
    def stopped(self) -> bool:
        """Whether the response is known to be no longer generating."""
        return (
            self.status in FINISHED_STATUSES or self.status == "gone" or self.kind == "disconnect"
        )


@final
@attrs.frozen(kw_only=True)
class DetachedResponse:
    """A handle to a background response left running by ``stream.detach()``.

    Pass it to [`resume`][tether.resume], in this process or another (it is plain data:
    ``attrs.asdict`` it to JSON and back), to pick the stream up where it was left.

    Example:
        ```python
        handle = await stream.detach()
        ...
        async with tether.resume(scope, handle) as stream:
            print(await stream.get_final_response())
        ```
    """

    response_id: str
    """The response left running."""
    last_sequence_number: int | None
    """The last event the detached stream saw; resuming starts after it."""


@final
@attrs.frozen(kw_only=True)
class StreamOutcome:
    """How one guarded stream ended. Read it from ``stream.outcome`` after the ``async with``.

    Example:
        ```python
        async with tether.guarded_stream(scope, model="m", input="hi") as stream:
            async for event in stream:
                break
        print(stream.outcome.reason, stream.outcome.status)  # "break", "cancelled"
        ```
    """

    Reason = EndReason
    """Why a guarded stream stopped: what [`reason`][tether.StreamOutcome.reason] says.
    Annotate with ``tether.StreamOutcome.Reason``.

    - ``completed``, ``failed``, ``incomplete``: the response finished on its own (never cancelled).
    - ``cancelled``: the response was cancelled by someone else (another process, a reaper).
    - ``explicit``: ``await stream.cancel()``.
    - ``break``: the ``async with`` body left before the response finished (a ``break``, a
      ``return``, an async generator around the block closed by its consumer).
    - ``exception``: the body raised.
    - ``scope_cancelled``: an enclosing cancel scope was cancelled.
    - ``scope_exited``: the ``open_scope`` block ended while the stream's block was still
      open elsewhere (an async generator its consumer left unclosed, a task that outlived
      the scope); the scope stopped it on its way out.
    - ``deadline``: an enclosing deadline ran out (``move_on_after``, ``fail_after``, a scope's deadline).
    - ``stalled``: a stall timeout fired (see [`StallError`][tether.StallError]).
    - ``interrupted``: ``KeyboardInterrupt`` (Ctrl-C).
    - ``race_lost``: another attempt of a race won.
    - ``detached``: ``stream.detach()``; the response was left running on purpose (on
      Temporal, also an attempt that handed its response to the next attempt).
    - ``cancel_requested``: [`request_cancel`][tether.request_cancel] asked for the stream's
      ``key``, from this process or another.
    """

    response_id: str | None
    """The response's id, once ``response.created`` arrived."""
    model: str | None
    """The model asked for."""
    background: bool
    """Whether the response ran in background mode (only those can be cancelled on the server)."""
    reason: EndReason
    """Why reading stopped (see [`StreamOutcome.Reason`][tether.StreamOutcome.Reason])."""
    status: str | None
    """The response's last known status on the server."""
    events: int
    """Events received (replays after a resume are not counted twice)."""
    deltas: int
    """Output deltas received (``response.*.delta`` events: roughly, tokens seen)."""
    last_sequence_number: int | None
    """The ``sequence_number`` of the last event received."""
    usage: ResponseUsage | None = attrs.field(default=None, eq=False)
    """Token usage, when the response finished and reported it."""
    receipt: CancelReceipt | None = None
    """The cancel receipt, when tether had to stop the response; ``None`` if it finished."""
    resumes: int = 0
    """How many times a lost connection was resumed."""
    cleanup_error: str | None = None
    """A failure during cleanup (also logged); never raised instead of the original exception."""
    started_at: float = 0.0
    """When the request was sent (``anyio.current_time()``)."""
    ended_at: float = 0.0
    """When cleanup finished (``anyio.current_time()``)."""

    @property
    def duration(self) -> float:
        """Seconds from the request to the end of cleanup."""
        return self.ended_at - self.started_at
