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
    "split_details",
]

FORMAT = 1
"""The version of the checkpoint's format (the ``"tether"`` key of the details' first item)."""

CANCEL_ACTIVITY = "tether.cancel_response"
"""The activity type of [`ResponseCanceller.cancel_response`][tether.temporal.ResponseCanceller]."""


@final
@attrs.frozen(kw_only=True)
class Checkpoint:
    """Where an activity's guarded stream was: the response, and the last event received.

    Heartbeated as the **first** item of the activity's heartbeat details, as a plain JSON
    object (any data converter carries it)::

        {"tether": 1, "response_id": "resp_...", "sequence_number": 41}

    ``sequence_number`` is ``null`` until an event reached your code; ``"stopped": true``
    is added when the attempt cancelled the response itself. Your own details, if
    you heartbeat any inside the block, follow it (see
    [`TemporalStream.user_details`][tether.temporal.TemporalStream.user_details]).

    Example:
        ```python
        checkpoint = tether.temporal.Checkpoint.from_details(
            [{"tether": 1, "response_id": "resp_1", "sequence_number": 4}, "mine"]
        )
        assert checkpoint is not None and checkpoint.response_id == "resp_1"
        ```
    """

    response_id: str
    """The background response the activity streams."""
    sequence_number: int | None
    """The ``sequence_number`` of the last event received, ``None`` before the first."""
    stopped: bool = False
    """The attempt stopped the response itself (cancelled it when an exception left its
    block): a retry starts a new one instead of resuming it."""

    def to_detail(self) -> dict[str, Any]:
        """The checkpoint as the JSON object heartbeated."""
        detail: dict[str, Any] = {
            "tether": FORMAT,
            "response_id": self.response_id,
            "sequence_number": self.sequence_number,
        }
        if self.stopped:
            detail["stopped"] = True
        return detail

    @classmethod
    def from_details(cls, details: Sequence[Any]) -> Checkpoint | None:
        """The checkpoint in heartbeat *details*, or ``None`` if their first item is not one."""
        first: object = details[0] if details else None
        if not isinstance(first, dict):
            return None
        detail = cast("dict[str, Any]", first)
        if detail.get("tether") != FORMAT:
            return None
        response_id: object = detail.get("response_id")
        seq: object = detail.get("sequence_number")
        if not isinstance(response_id, str) or not response_id:
            return None
        return cls(
            response_id=response_id,
            sequence_number=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            stopped=detail.get("stopped") is True,
        )

    @classmethod
    def from_failure(cls, error: BaseException) -> Checkpoint | None:
        """In workflow code: the checkpoint a failed activity's last heartbeat carried, if any.

        Temporal hands the last heartbeat's details to the workflow on a timeout (the worker died,
        the attempt or the whole activity timed out: ``TimeoutError.last_heartbeat_details``) and
        on a cancellation (``CancelledError.details``). Walks the error's causes.

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
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, TimeoutError):
                found = cls.from_details(current.last_heartbeat_details)
                if found is not None:
                    return found
            elif isinstance(current, CancelledError):
                found = cls.from_details(current.details)
                if found is not None:
                    return found
            current = current.__cause__  # ActivityError.cause is its __cause__
        return None


def split_details(details: Sequence[Any]) -> tuple[Checkpoint | None, tuple[Any, ...]]:
    """Heartbeat details as (tether's checkpoint, the user's own details)."""
    checkpoint = Checkpoint.from_details(details)
    return checkpoint, tuple(details[1:] if checkpoint is not None else details)
