"""The lifecycle of one guarded response: its states, and the transitions between them.

A [`ResponseGuard`][tether._protocol.ResponseGuard] is always in exactly one `State`, and
it changes state only through ``ResponseGuard._to``, which calls `check_transition`: a
transition not in `TRANSITIONS` raises `IllegalTransition`, so a bug that would leave a
guard in a combination nobody thought about fails loudly (in the tests first). The diagram
is in ``docs/design.md`` ("The guard's lifecycle").

```
NEW -> QUEUED -> ADMITTED -> SENDING -> OPEN -> EXHAUSTED      (how far the response got)
any of those -> STOPPING [-> CANCEL_QUEUED] -> STOPPED -> FINISHED   (how far the stop got)
```

The states are ordered (an ``IntEnum``): everything before `State.STOPPING` says how far the
response got; `State.STOPPING` and after say how far the stop got. A stop does not erase
how far the response got: the guard keeps that as ``_reached`` (the last state before the
stop, or `State.EXHAUSTED` when a read ends under the stop), which is what ``request_sent``,
``admitted`` and ``exhausted`` are read from.

What is not a state, and is kept as a fact named for what it is: a held ``max_concurrency``
slot (``_holds_concurrency_slot``, released once at the finish), a multiplexed (HTTP/2)
connection (``_multiplexed``), stall timeouts being set (``_has_stall_timeout``), another
task's request to give up an open that has sent nothing (``_abort_requested``, the open's
``cancel_called``), and the read path's ``_hot`` cache (``_reading.py``).
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "IllegalTransition", "State", "check_transition"]


class State(enum.IntEnum):
    """Where one guarded response is in its lifecycle (ordered: compare with ``<``)."""

    NEW = 0
    """Made, not entered: nothing sent, nothing to stop."""
    QUEUED = 1
    """``open()`` began: waiting for a ``max_concurrency`` slot. A cancel sends nothing."""
    ADMITTED = 2
    """Past the queue (holding its slot, if the scope has a limit): the journal's intent, a
    pooled connection. Nothing sent yet: a cancel aborts the open and sends nothing."""
    SENDING = 3
    """The request's headers are leaving: the open is shielded until ``response.created``
    (bounded by ``first_event_timeout``), so the id is always learnt and can be cancelled."""
    OPEN = 4
    """The id is known (``response.created`` read, or a resume's handle): events flow."""
    EXHAUSTED = 5
    """The events were read to their end (a final event, or the server's clean end)."""
    STOPPING = 6
    """``stop()`` runs: close the HTTP stream, cancel on the server, drain, journal."""
    CANCEL_QUEUED = 7
    """The stop waits, in its own task, for one of its client's cancel slots."""
    STOPPED = 8
    """The stop is over (a second caller of ``stop()`` returns); no outcome yet."""
    FINISHED = 9
    """The outcome is recorded on the scope and ``StreamEvent.Ended`` emitted: final."""


TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    # open(): the one way in (a second open() is a RuntimeError, not a transition).
    State.NEW: frozenset({State.QUEUED, State.STOPPING}),
    State.QUEUED: frozenset({State.ADMITTED, State.STOPPING}),
    # A resume's id is known from its handle: nothing is created, OPEN follows the GET.
    State.ADMITTED: frozenset({State.SENDING, State.OPEN, State.STOPPING}),
    State.SENDING: frozenset({State.OPEN, State.STOPPING}),
    State.OPEN: frozenset({State.EXHAUSTED, State.STOPPING}),
    State.EXHAUSTED: frozenset({State.STOPPING}),
    # stop(): legal from every state before it; runs once.
    State.STOPPING: frozenset({State.CANCEL_QUEUED, State.STOPPED, State.FINISHED}),
    State.CANCEL_QUEUED: frozenset({State.STOPPED, State.FINISHED}),
    State.STOPPED: frozenset({State.FINISHED}),
    State.FINISHED: frozenset(),
}
"""Every legal transition, by the state it leaves. Why each one exists, the invariant it
keeps and the test that proves it: ``docs/design.md``, "The guard's lifecycle".

``STOPPING``/``CANCEL_QUEUED`` -> ``FINISHED`` is the one shortcut: a second caller of
``stop()`` (``__aexit__`` while another task's ``cancel()`` stops the stream) whose wait a
native asyncio cancellation cut records the outcome at once; the first stop then ends
without passing through ``STOPPED``."""


class IllegalTransition(RuntimeError):
    """A guard was asked to move between two states that `TRANSITIONS` does not link: a bug."""


def check_transition(old: State, new: State) -> None:
    """Raise `IllegalTransition` unless *old* -> *new* is in `TRANSITIONS`."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(
            f"a guarded response cannot go from {old.name} to {new.name} "
            f"(from {old.name}: {', '.join(sorted(s.name for s in TRANSITIONS[old])) or 'nothing'})"
        )
