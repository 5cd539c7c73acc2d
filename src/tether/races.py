"""Races and hedges: the records, types and progress events of [`race`][tether.race].

[`tether.race`][tether.race], [`tether.race_stream`][tether.race_stream],
[`tether.adaptive`][tether.adaptive], [`tether.RaceFailed`][tether.RaceFailed] and
[`tether.AttemptRejected`][tether.AttemptRejected] are all most code needs; this module
holds the rest: what a race returns (``RaceResult``, ``RaceAttempt``), the objects behind
``win=`` and ``stagger=``, and the events a race emits to
[`tether.observe`][tether.observe] observers, in this order:

- ``RaceStarted(id, parent, win, models, stagger)``;
- per attempt started, ``AttemptStarted(id, parent=race id, index, model, trigger, at)``,
  then its guarded stream's events (``StreamStarted``... with ``parent`` = the attempt id);
- ``RaceDecided(id, winner, winner_id, at)`` once something won;
- per attempt sent, ``AttemptEnded(id, parent, attempt)``: its final
  [`RaceAttempt`][tether.races.RaceAttempt] (``won``, ``lost`` with its receipt...);
- ``RaceEnded(id, result, error)``.

Example:
    ```python
    import tether
    from tether.races import AttemptEnded, RaceResult

    def show(event):
        if isinstance(event, AttemptEnded):
            print(event.attempt.index, event.attempt.state, event.attempt.receipt)

    with tether.observe.observing(show):
        result: RaceResult = await tether.race(client, [a, b], win="first_token")
    ```
"""

from __future__ import annotations

from ._hedging import AdaptiveStagger as AdaptiveStagger
from ._hedging import HedgeBudget as HedgeBudget
from ._hedging import TokenBudget as TokenBudget
from ._hedging import Trigger as Trigger
from ._race_records import AttemptEnded as AttemptEnded
from ._race_records import AttemptStarted as AttemptStarted
from ._race_records import AttemptState as AttemptState
from ._race_records import RaceAttempt as RaceAttempt
from ._race_records import RaceDecided as RaceDecided
from ._race_records import RaceEnded as RaceEnded
from ._race_records import RaceResult as RaceResult
from ._race_records import RaceStarted as RaceStarted
from ._race_records import WinCondition as WinCondition
from ._race_records import first_completed as first_completed
from ._race_records import first_token as first_token
from ._race_stream import RaceStream as RaceStream

__all__ = [
    "AdaptiveStagger",
    "AttemptEnded",
    "AttemptStarted",
    "AttemptState",
    "HedgeBudget",
    "RaceAttempt",
    "RaceDecided",
    "RaceEnded",
    "RaceResult",
    "RaceStarted",
    "RaceStream",
    "TokenBudget",
    "Trigger",
    "WinCondition",
    "first_completed",
    "first_token",
]


def _claim_public_names() -> None:
    """Public classes say they come from ``tether.races``, not from their private module."""
    for name in __all__:
        obj: object = globals()[name]
        if isinstance(obj, type):
            obj.__module__ = __name__


_claim_public_names()
