"""The checkpoint tether keeps in a Temporal activity's heartbeat details.

Plain data, no I/O: ``Checkpoint.from_failure`` runs in workflow code too. The activity that
cancels a left-over response, and its workflow-side call, are in ``temporal.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast, final

import attrs
from temporalio.exceptions import CancelledError, TimeoutError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CANCEL_ACTIVITY",
    "FORMAT",
    "Checkpoint",
    "checkpoints_from_failure",
    "detail_of",
    "split_details",
]

FORMAT = 2
"""The version of the checkpoint's format (the ``"tether"`` key of the details' first item).
Version 1 (the first cut's: one stream's keys at the top level) is still read, as the
activity's only stream."""

CANCEL_ACTIVITY = "tether.cancel_response"
"""The activity type of [`ResponseCanceller.cancel_response`][tether.temporal.ResponseCanceller]."""


@final
@attrs.frozen(kw_only=True)
class Checkpoint:
    """Where one of an activity's guarded streams was: the response, the last event received.

    An activity's heartbeat details carry one per guarded stream the activity opened, in
    the order it opened them, as the **first** item, a plain JSON object (any data
    converter carries it)::

        {"tether": 2, "streams": [{"response_id": "resp_a", "sequence_number": 80, "finished": true},
                                  {"response_id": "resp_b", "sequence_number": 41}]}

    On a retry, the activity's first stream resumes the first response, its second the
    second, and so on. ``sequence_number`` is ``null`` until an event reached your code;
    ``"stopped": true`` is added when the attempt cancelled the response itself or saw
    it fail, ``"finished": true`` when the response ended on its own with a result. Your own details, if you
    heartbeat any, follow the object (see
    [`TemporalStream.user_details`][tether.temporal.TemporalStream.user_details]).

    Example:
        ```python
        checkpoint = tether.temporal.Checkpoint.from_details(
            [{"tether": 2, "streams": [{"response_id": "resp_1", "sequence_number": 4}]}, "mine"]
        )
        assert checkpoint is not None and checkpoint.response_id == "resp_1"
        ```
    """

    response_id: str
    """The background response the stream reads."""
    sequence_number: int | None
    """The ``sequence_number`` of the last event received, ``None`` before the first."""
    stopped: bool = False
    """The attempt saw the response end without a result: it cancelled it (an exception
    left its block, ...) or the response failed. A retry starts a new one instead of
    resuming it."""
    finished: bool = False
    """The response ended on its own with a result (completed, incomplete): nothing is
    left to cancel; a retry replays it."""

    def to_detail(self) -> dict[str, Any]:
        """The JSON object heartbeated by an activity whose only stream this is."""
        return detail_of([self])

    @classmethod
    def all_from_details(cls, details: Sequence[Any]) -> tuple[Checkpoint | None, ...]:
        """Every stream's checkpoint in heartbeat *details*, in the order the activity opened
        them (``None`` for a stream that had no response yet); ``()`` if none.

        Example:
            ```python
            points = tether.temporal.Checkpoint.all_from_details(activity.info().heartbeat_details)
            ```
        """
        first: object = details[0] if details else None
        if not isinstance(first, dict):
            return ()
        detail = cast("dict[str, Any]", first)
        version: object = detail.get("tether")
        if version == 1:  # one stream, its keys at the top level
            point = _point_of(detail)
            return () if point is None else (point,)
        streams: object = detail.get("streams")
        if version != FORMAT or not isinstance(streams, list):
            return ()
        points = tuple(_point_of(entry) for entry in cast("list[object]", streams))
        return points if any(points) else ()

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> Checkpoint | None:
        """The checkpoint of the last stream the activity opened, in heartbeat *details*;
        ``None`` if their first item is not tether's (see ``all_from_details`` for every one)."""
        points = [point for point in cls.all_from_details(details) if point is not None]
        return points[-1] if points else None

    @classmethod
    def from_failure(cls, error: BaseException) -> Checkpoint | None:
        """In workflow code: the checkpoint of the last stream a failed activity opened.

        Temporal hands the last heartbeat's details to the workflow on a timeout (the worker died,
        the attempt or the whole activity timed out: ``TimeoutError.last_heartbeat_details``) and
        on a cancellation (``CancelledError.details``). Walks the error's causes.
        [`ResponseCanceller.cancel_from_failure`][tether.temporal.ResponseCanceller.cancel_from_failure]
        cancels every response the failure names.

        Args:
            error: What ``workflow.execute_activity`` raised (an ``ActivityError``).

        Returns:
            The [`Checkpoint`][tether.temporal.Checkpoint], or ``None`` if no cause carried one.

        Example:
            ```python
            try:
                await workflow.execute_activity(essay, prompt, ...)
            except ActivityError as err:
                print(tether.temporal.Checkpoint.from_failure(err))
            ```
        """
        points = [point for point in checkpoints_from_failure(error) if point is not None]
        return points[-1] if points else None


def checkpoints_from_failure(error: BaseException) -> tuple[Checkpoint | None, ...]:
    """Every stream's checkpoint that a failed activity's last heartbeat carried."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        details: Sequence[Any] = ()
        if isinstance(current, TimeoutError):
            details = current.last_heartbeat_details
        elif isinstance(current, CancelledError):
            details = current.details
        found = Checkpoint.all_from_details(details)
        if found:
            return found
        current = current.__cause__  # ActivityError.cause is its __cause__
    return ()


def detail_of(points: Sequence[Checkpoint | None]) -> dict[str, Any]:
    """The first heartbeat item of an activity whose streams are at *points*."""
    return {"tether": FORMAT, "streams": [None if p is None else _entry_of(p) for p in points]}


def split_details(details: Sequence[Any]) -> tuple[tuple[Checkpoint | None, ...], tuple[Any, ...]]:
    """Heartbeat details as (tether's checkpoint of every stream, the user's own details)."""
    first: object = details[0] if details else None
    ours = isinstance(first, dict) and cast("dict[str, Any]", first).get("tether") in (1, FORMAT)
    return Checkpoint.all_from_details(details), tuple(details[1:] if ours else details)


def _entry_of(point: Checkpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "response_id": point.response_id,
        "sequence_number": point.sequence_number,
    }
    if point.stopped:
        entry["stopped"] = True
    if point.finished:
        entry["finished"] = True
    return entry


def _point_of(entry: object) -> Checkpoint | None:
    if not isinstance(entry, dict):
        return None
    detail = cast("dict[str, Any]", entry)
    response_id: object = detail.get("response_id")
    seq: object = detail.get("sequence_number")
    if not isinstance(response_id, str) or not response_id:
        return None
    return Checkpoint(
        response_id=response_id,
        sequence_number=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        stopped=detail.get("stopped") is True,
        finished=detail.get("finished") is True,
    )
