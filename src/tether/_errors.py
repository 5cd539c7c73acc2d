"""Exceptions raised by tether.

The hierarchy::

    TetherError (Exception)
    ├── StallError (TetherError, TimeoutError)       a stream went silent for too long
    ├── DeadlineExceeded (TetherError, TimeoutError)  a scope's deadline ran out
    ├── ResponseNotCompleted (TetherError)            get_final_response() on a response that did not complete
    ├── AttemptRejected (TetherError)                 a race's win predicate refused a completed response
    └── RaceFailed (TetherError, ExceptionGroup)      every attempt of a race failed

tether never raises its own exception instead of yours: when the body of a guarded stream
raises, that exception propagates unchanged, and any cleanup failure is recorded on the
stream's [`StreamOutcome`][tether.StreamOutcome] and logged on the ``tether`` logger.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from openai.types.responses import Response
    from typing_extensions import Self

    from ._outcome import StreamOutcome

__all__ = [
    "AttemptRejected",
    "DeadlineExceeded",
    "RaceFailed",
    "ResponseNotCompleted",
    "StallError",
    "TetherError",
]

StallKind = Literal["first_event", "first_token", "idle"]
"""Which stall timeout fired; public as ``StallError.Kind``."""


class TetherError(Exception):
    """Base class of the errors tether raises itself.

    Example:
        ```python
        try:
            ...
        except tether.TetherError as exc:
            print("tether gave up:", exc)
        ```
    """


class StallError(TetherError, TimeoutError):
    """A guarded stream produced no event for longer than one of its stall timeouts.

    The response was cancelled on the server before this was raised, exactly as for a
    deadline. ``except TimeoutError`` catches it.

    Example:
        ```python
        try:
            async with tether.guarded_stream(scope, model="m", input="hi", idle_timeout=5) as s:
                async for event in s:
                    ...
        except tether.StallError as exc:
            print(exc.kind, exc.timeout)  # "idle", 5
        ```
    """

    Kind = StallKind
    """Which stall timeout fired: ``"first_event"`` (no ``response.created`` within
    ``first_event_timeout``), ``"first_token"`` (no output token within
    ``first_token_timeout``) or ``"idle"`` (no event within ``idle_timeout``). Annotate with
    ``tether.StallError.Kind``."""

    kind: StallKind
    """Which timeout fired (see [`StallError.Kind`][tether.StallError.Kind])."""
    timeout: float
    """The timeout, in seconds."""

    def __init__(self, kind: StallKind, timeout: float, response_id: str | None) -> None:
        self.kind = kind
        self.timeout = timeout
        self.response_id = response_id
        what = {
            "first_event": "no response.created",
            "first_token": "no first token",
            "idle": "no event",
        }[kind]
        super().__init__(
            f"{what} within {kind}_timeout={timeout!r}s (response {response_id or 'not yet known'})"
        )


class DeadlineExceeded(TetherError, TimeoutError):
    """The deadline of a [`Scope`][tether.Scope] ran out.

    Raised by [`open_scope`][tether.open_scope] on exit, after every live response inside
    was cancelled on the server (like ``anyio.fail_after``). ``except TimeoutError`` catches it.

    Example:
        ```python
        try:
            async with tether.open_scope(client, deadline=30) as scope:
                ...
        except TimeoutError:
            print("out of time; nothing left running on the server")
        ```
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        super().__init__(f"the deadline of {deadline!r}s ran out")


class ResponseNotCompleted(TetherError):
    """[`get_final_response`][tether.GuardedStream.get_final_response] found no completed response.

    Example:
        ```python
        try:
            response = await stream.get_final_response()
        except tether.ResponseNotCompleted as exc:
            print(exc.status)  # "failed", "cancelled", ...
        ```
    """

    def __init__(self, response_id: str | None, status: str | None, response: Response | None):
        self.response_id = response_id
        self.status = status
        self.response = response
        super().__init__(f"response {response_id} ended with status {status!r}, not 'completed'")


class RaceFailed(ExceptionGroup[Exception], TetherError):  # pyright: ignore[reportUnsafeMultipleInheritance]
    """Every attempt of a race failed: one exception carrying each attempt's error.

    An ``ExceptionGroup``, so ``except*`` works on the attempts' errors; ``outcomes`` holds
    every attempt's [`StreamOutcome`][tether.StreamOutcome], in the order the attempts were given.

    Example:
        ```python
        try:
            result = await tether.race(client, [a, b])
        except tether.RaceFailed as failed:
            for error, outcome in zip(failed.exceptions, failed.outcomes):
                print(outcome.model, error)
        ```
    """

    outcomes: tuple[StreamOutcome, ...]
    """Every attempt's outcome."""

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], outcomes: Sequence[StreamOutcome] = ()
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.outcomes = tuple(outcomes)
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], outcomes: Sequence[StreamOutcome] = ()
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> RaceFailed:  # type: ignore[override]
        """Keep ``outcomes`` when ``except*`` splits the group."""
        return RaceFailed(self.message, excs, self.outcomes)

    def __reduce__(self) -> Any:  # pragma: no cover - pickling support
        return (RaceFailed, (self.message, list(self.exceptions), self.outcomes))


class AttemptRejected(TetherError):
    """An attempt completed, but its response did not satisfy the race's win predicate.

    Example:
        ```python
        except tether.RaceFailed as failed:
            rejected = [e for e in failed.exceptions if isinstance(e, AttemptRejected)]
        ```
    """

    def __init__(self, response: Response, condition: str) -> None:
        self.response = response
        super().__init__(f"response {response.id} completed but {condition} rejected it")


def fatal_in(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first ``KeyboardInterrupt``/``SystemExit``-like exception in *group*, if any.

    A task group wraps whatever its tasks raise; a Ctrl-C or ``sys.exit()`` in a tool or an
    attempt must reach the caller as itself, or ``except KeyboardInterrupt`` misses it and
    ``sys.exit(3)``'s code is lost.
    """
    import anyio

    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = fatal_in(exc)  # pyright: ignore[reportUnknownArgumentType]
            if found is not None:
                return found
        elif not isinstance(exc, (Exception, cancelled)):
            return exc
    return None
