"""Races and hedges: the records, types and progress events of [`race`][tether.race].

[`tether.race`][tether.race], [`tether.race_stream`][tether.race_stream],
[`tether.adaptive`][tether.adaptive], [`tether.RaceFailed`][tether.RaceFailed] and
[`tether.AttemptRejected`][tether.AttemptRejected] are all most code needs; this module
holds the rest: what a race returns (``RaceResult``, ``RaceAttempt``), the objects behind
``win=`` and ``stagger=``, and the events a race emits to
[`tether.observe`][tether.observe] observers, all nested in
[`RaceEvent`][tether.races.RaceEvent], in this order:

- ``RaceEvent.Started(id, parent, win, models, stagger)``;
- per attempt started, ``RaceEvent.AttemptStarted(id, parent=race id, index, model, trigger, at)``,
  then its guarded stream's events (``StreamEvent.Started``... with ``parent`` = the attempt id);
- ``RaceEvent.Decided(id, winner, winner_id, at)`` once something won;
- per attempt sent, ``RaceEvent.AttemptEnded(id, parent, attempt)``: its final
  [`RaceAttempt`][tether.races.RaceAttempt] (``won``, ``lost`` with its receipt...);
- ``RaceEvent.Ended(id, result, error)``.

Example:
    ```python
    import tether
    from tether.races import RaceEvent, RaceResult

    def show(event):
        if isinstance(event, RaceEvent.AttemptEnded):
            print(event.attempt.index, event.attempt.state, event.attempt.receipt)

    with tether.observe.observing(show):
        result: RaceResult = await tether.race(client, [a, b], win="first_token")
    ```
"""

from __future__ import annotations

from ._hedging import AdaptiveStagger as AdaptiveStagger
from ._public import claim as _claim
from ._race_records import RaceAttempt as RaceAttempt
from ._race_records import RaceEvent as RaceEvent
from ._race_records import RaceResult as RaceResult
from ._race_stream import RaceStream as RaceStream

__all__ = [
    "AdaptiveStagger",
    "RaceAttempt",
    "RaceEvent",
    "RaceResult",
    "RaceStream",
]


_claim(__name__, globals(), __all__)
