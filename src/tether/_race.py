"""Races and hedges: several attempts at one answer, one winner, every loser cancelled on the server.

``race`` checks its arguments and builds every guarded stream before anything is sent
(``prepare_race``), then runs the engine (``_race_engine.py``: the attempts, the decision,
the losers' stops), whose launcher (``_race_launch.py``) starts the attempts in turn, each
when the previous one failed or stayed silent for ``stagger`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ._build import StreamOptions, build_guard
from ._compat import check_async_client
from ._hedging import AdaptiveStagger
from ._race_engine import Contestant, Race, Stagger
from ._race_launch import Progress, launch_staggered
from ._race_records import (
    RaceResult,
    Win,
    WinCondition,
    first_completed,
    first_token,
)
from ._scope import Scope
from ._validate import check_non_negative, check_positive

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["Contestant", "Progress", "Race", "Stagger", "launch_staggered", "prepare_race", "race"]


def _win_condition(win: Win) -> WinCondition:
    if win == "first_completed":
        return first_completed
    if win == "first_token":
        return first_token
    if isinstance(win, str):
        raise ValueError(f"win must be 'first_completed' or 'first_token', got {win!r}")
    if callable(win):
        return WinCondition(getattr(win, "__name__", "predicate"), "completed", win)
    raise TypeError(
        f"win must be 'first_completed', 'first_token' or a Callable[[Response], bool], got {win!r}"
    )


def _check_stagger(stagger: Stagger) -> Stagger:
    if stagger is None or isinstance(stagger, AdaptiveStagger):
        return stagger
    return check_non_negative("stagger", stagger, what="seconds, tether.adaptive(...) or None")


def prepare_race(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    win: Win,
    stagger: Stagger,
    grace: float | None,
    max_concurrency: int | None,
    *,
    handover: bool,
) -> Race:
    """Check every argument and build every guarded stream: nothing is sent from here."""
    if isinstance(client_or_scope, Scope):
        if max_concurrency is not None:
            raise ValueError(
                "max_concurrency applies to a client; racing in a scope uses the scope's: "
                f"pass it to open_scope(), got max_concurrency={max_concurrency!r}"
            )
        client_or_scope.require_not_exited()  # a usage error, not N attempts failing
        scope = client_or_scope
    else:
        scope = Scope(
            check_async_client(client_or_scope, argument="client_or_scope"),
            max_concurrency=max_concurrency,
        )
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        raise TypeError(f"requests must be a sequence of dicts, got {requests!r}")
    if not requests:
        raise ValueError(f"requests must not be empty, got {requests!r}")
    condition = _win_condition(win)
    stagger = _check_stagger(stagger)
    if grace is not None:
        grace = check_positive("grace", grace)
    contestants: list[Contestant] = []
    for index, request in enumerate(requests):
        if not isinstance(request, Mapping):
            raise TypeError(f"requests[{index}] must be a dict of create kwargs, got {request!r}")
        kwargs: dict[str, Any] = dict(request)
        attempt_scope = scope
        if "client" in kwargs:
            own = check_async_client(kwargs.pop("client"), argument=f"requests[{index}]['client']")
            attempt_scope = scope.for_client(own)  # one bound, one journal, one record
        bucket = stagger.bucket(kwargs) if isinstance(stagger, AdaptiveStagger) else None
        try:
            guard = build_guard(attempt_scope, *StreamOptions.split(kwargs, grace=grace))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"requests[{index}]: {exc}") from None
        contestants.append(Contestant(index, guard, bucket, keep=handover))
    return Race(
        contestants, condition, stagger, handover=handover, ordered=scope.limiter is not None
    )


async def race(
    client_or_scope: Scope | AsyncOpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: Win = "first_completed",
    stagger: Stagger = None,
    grace: float | None = None,
    max_concurrency: int | None = None,
) -> RaceResult:
    """Send several requests for one answer, keep the first that wins, cancel the rest on the server.

    Each request runs as a [`guarded_stream`][tether.guarded_stream] in its own task. When
    one wins, every other live attempt is closed and cancelled on the server, all of them
    concurrently, each with its own receipt; ``race`` returns once every loser is confirmed
    cancelled or its grace ran out. An attempt that completes after the decision is a loser
    too. An outer cancellation or deadline cancels every attempt on the server and propagates.
    Progress events ([`tether.races`][tether.races]: ``RaceEvent.Started``, ``RaceEvent.AttemptStarted``...)
    go to [`tether.observe`][tether.observe] observers.

    Args:
        client_or_scope: An ``openai.AsyncOpenAI``, or a [`Scope`][tether.Scope] (its grace,
            first-event timeout, concurrency bound and journal apply; its deadline bounds
            the race).
        requests: ``responses.create`` kwargs, one dict per attempt; each may also carry
            ``client=`` (race providers) and any [`guarded_stream`][tether.guarded_stream]
            option (``grace=``, ``first_token_timeout=``...).
        win: ``"first_completed"`` (default), ``"first_token"`` (the winner is then read to
            completion), or a ``Callable[[Response], bool]``: a completed response it rejects is discarded and
            the race goes on.
        stagger: ``None``: start every attempt at once. Seconds: hedge, starting attempt
            *k + 1* only when attempt *k* failed or stayed silent (no token) that long; once
            some attempt streams, no more start unless it fails. Or an
            [`adaptive`][tether.adaptive] stagger.
        grace: Seconds each loser's server-side cancel may take (default: the scope's).
        max_concurrency: With a client: at most this many attempts in flight at once; they
            take their slots in request order. With a scope, pass it to ``open_scope``
            instead (a ValueError here).

    Returns:
        A [`RaceResult`][tether.races.RaceResult]; ``result.winner.response`` is the final
        response.

    Raises:
        RaceFailed: No attempt won: every error (``AttemptRejected`` for a rejected one) and
            every outcome. Also when a ``first_token`` winner fails after the decision.
        TypeError: A bad argument type (a sync client, a non-callable ``win``...).
        ValueError: An argument out of range (empty ``requests``, ``stagger < 0``...).
            Arguments are checked before any request is sent.

    Example:
        ```python
        result = await tether.race(client, [
            dict(model="gpt-5", input=question),
            dict(model="gpt-5-mini", input=question),
        ])
        print(result.winner.model, result.winner.response.output_text)
        ```

    Added in version 0.1.
    """
    engine = prepare_race(
        client_or_scope, requests, win, stagger, grace, max_concurrency, handover=False
    )
    try:
        async with anyio.create_task_group() as tg:
            engine.start(tg)
        result = engine.result()
    except BaseException as exc:
        engine.ended(None, exc)
        raise
    engine.ended(result, None)
    return result
