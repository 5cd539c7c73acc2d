"""The one shielded cleanup path: cancel a background response on the server, within grace.

Every part of tether that stops a response (the guarded stream, races, agents, the sync
facade, the reaper) ends up here, so the retry policy, the 400/404 rules and the receipt are
written once.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, cast

import anyio
import attrs
import openai
import stamina
from anyio.lowlevel import RunVar

from ._compat import pool_limits
from ._outcome import CancelReceipt

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ._compat import LeanTarget

__all__ = [
    "cancel_on_server",
    "cancel_slots",
    "log",
    "needs_verifying",
    "unsent",
    "verify_cancel",
]

log = logging.getLogger("tether")

# Backoff between cancel attempts: short, because the whole loop lives inside `grace`.
_WAIT_INITIAL = 0.05
_WAIT_MAX = 0.5
_WAIT_JITTER = 0.05


def _retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts, 408, 409, 429 and 5xx are worth another try."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        return code in (408, 409, 429) or code >= 500
    return False


async def _cancel_once(
    client: AsyncOpenAI, response_id: str, lean: LeanTarget | None, tries: _Tries
) -> str:
    try:
        if lean is not None:
            return _status(await lean.request("POST", f"responses/{response_id}/cancel"))
        return (await client.responses.cancel(response_id)).status or "unknown"
    except openai.BadRequestError:
        # "Cannot cancel a completed response." (or it was never a background one):
        # not an error; read back what it really is.
        status, _ = await _retrieve_status(client, response_id, lean)
        tries.read_back = True
        return status


def _status(body: dict[str, object]) -> str:
    status = body.get("status")
    return status if isinstance(status, str) and status else "unknown"


def _output_tokens(body: dict[str, object]) -> int | None:
    usage = body.get("usage")
    if isinstance(usage, dict):
        tokens = cast("dict[str, object]", usage).get("output_tokens")
        return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None
    return 0 if body.get("output") == [] else None


async def _retrieve_status(
    client: AsyncOpenAI, response_id: str, lean: LeanTarget | None
) -> tuple[str, int | None]:
    """The response's status, and its output tokens: the server's ``usage``, else ``0`` when
    it reports no output item at all, else ``None`` (unknown).

    The live API answers ``usage: null`` for a cancelled response, but it still lists the
    output items the model had begun (a message, a reasoning item, a tool call): a response
    cancelled before its first output item cost no output tokens. That is what a hedge that
    lost before its first token usually is, and what lets a token budget charge it nothing.
    """
    if lean is not None:
        body = await lean.request("GET", f"responses/{response_id}")
    else:  # the SDK's model, read as the server's JSON: one parser for both paths
        body = (await client.responses.retrieve(response_id)).to_dict()
    return _status(body), _output_tokens(body)


_IN_FLIGHT_FLOOR = 64
"""Cancels in flight at once per client (and event loop), at least; the others queue for a slot.

A thousand streams stopped at once would otherwise put a thousand requests in the client's
pool at once: each request holds its buffers, and httpcore 1.x's assignment loop probes
every idle connection on each pass, so the stop of all of them took longer than their grace
and peaked at twice the memory of the streams (``benchmarks/bench_memory.py``). The wait for
a slot is inside the cancel's grace. A guarded stream's stop queues in its own task, not in
a child task of its own (``_critical.run_critical_queued``). Where the pool says how many
connections it keeps alive, the cap follows it (`_in_flight`)."""
_IN_FLIGHT: int | None = None
"""A fixed number of cancel slots instead of `_in_flight`'s (tests set it to make stops queue)."""
_limiters: RunVar[weakref.WeakKeyDictionary[AsyncOpenAI, anyio.CapacityLimiter]] = RunVar(
    "tether_cancel_limiters"
)


def _in_flight(client: AsyncOpenAI) -> int:
    """How many cancels *client* may have in flight: what its pool keeps alive, at least 64.

    The pool's ``max_keepalive_connections`` (100 for the SDK's default client) is the
    concurrency it is sized for: that many cancels reuse warm connections, wave after wave;
    beyond it, each extra one opens a connection that is closed after its answer. A race's
    100 losers then leave in one wave instead of two (the 36 beyond 64 waited for a 200 ms
    answer). Never more than ``max_connections``: more would queue inside the pool, where
    they cost every pass of its assignment loop. 64 where the pool does not say
    (`_compat.pool_limits`).
    """
    if _IN_FLIGHT is not None:
        return _IN_FLIGHT
    limits = pool_limits(client)
    if limits is None:
        return _IN_FLIGHT_FLOOR
    connections, keepalive = limits
    return max(1, min(connections, max(keepalive, _IN_FLIGHT_FLOOR)))


def cancel_slots(client: AsyncOpenAI) -> anyio.CapacityLimiter:
    """The cancel slots of *client* on the running event loop (`_in_flight` of them)."""
    try:
        table = _limiters.get()
    except LookupError:
        table = weakref.WeakKeyDictionary[openai.AsyncOpenAI, anyio.CapacityLimiter]()
        _limiters.set(table)
    limiter = table.get(client)
    if limiter is None:
        limiter = table[client] = anyio.CapacityLimiter(_in_flight(client))
    return limiter


_quick_clients: weakref.WeakKeyDictionary[AsyncOpenAI, AsyncOpenAI] = weakref.WeakKeyDictionary()
_FINAL = frozenset({"completed", "failed", "incomplete", "cancelled"})


def _quick(client: AsyncOpenAI) -> AsyncOpenAI:
    """*client* with the SDK's own retries off (ours run within grace), made once per client.

    ``with_options`` copies the client (and recomputes its platform headers): on the stop
    path of every stream that costs more than the cancel POST itself.
    """
    quick = _quick_clients.get(client)
    if quick is None or quick.api_key != client.api_key:  # made anew when the key rotates
        quick = _quick_clients[client] = client.with_options(max_retries=0)
    return quick


async def _confirm(
    client: AsyncOpenAI, response_id: str, lean: LeanTarget | None
) -> tuple[str, int | None]:
    """What the server finally reports, and the output tokens it reports with it. The API's
    cancel is best effort: a response it answered ``cancelled`` may still be generating and
    may end ``completed``; read it back until it is final (within the caller's grace)."""
    wait = _WAIT_INITIAL
    while True:
        status, tokens = await _retrieve_status(client, response_id, lean)
        if status in _FINAL or status == "unknown":
            return status, tokens
        await anyio.sleep(wait)
        wait = min(wait * 2, _WAIT_MAX)


class _Tries:
    """How many cancel requests were sent, and whether the lean path is still in use."""

    __slots__ = ("count", "lean", "read_back")

    def __init__(self) -> None:
        self.count = 0
        self.lean: LeanTarget | None = None
        self.read_back = False  # the status was read back with retrieve (the server's final word)


async def _send(
    client: AsyncOpenAI, response_id: str, lean: LeanTarget | None, tries: _Tries
) -> str:
    """The cancel: sent at once; only a retryable failure enters the retry loop."""
    tries.lean = lean
    try:
        tries.count = 1
        try:
            return await _cancel_once(client, response_id, lean, tries)
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            if lean is None:
                raise
            tries.lean = None  # the credentials of the create went stale: the SDK's way
            return await _cancel_once(client, response_id, None, tries)
    except Exception as exc:
        if not _retryable(exc):
            raise
    async for attempt in stamina.retry_context(
        on=_retryable,
        attempts=None,
        timeout=None,
        wait_initial=_WAIT_INITIAL,
        wait_max=_WAIT_MAX,
        wait_jitter=_WAIT_JITTER,
    ):
        with attempt:
            tries.count += 1
            return await _cancel_once(client, response_id, tries.lean, tries)
    raise AssertionError("unreachable: the retry loop has no attempt limit")  # pragma: no cover


async def cancel_on_server(
    client: AsyncOpenAI,
    response_id: str,
    *,
    grace: float,
    lean: LeanTarget | None = None,
    slot_held: bool = False,
) -> CancelReceipt:
    """POST ``/responses/{id}/cancel`` under a shield, retrying transient failures within *grace*.

    Never raises an ``Exception``: what went wrong is on the receipt (and logged).
    Cancellation of the caller is deferred until the receipt is in or grace ran out.
    The first attempt is sent straight away; only a retryable failure enters the retry loop.
    With *lean* (``_compat.lean_target``: the stream's own request, mirrored) the requests
    skip the SDK's machinery; an auth error there falls back to the SDK, which knows how to
    renew credentials. With *slot_held*, the caller holds one of ``cancel_slots(client)``
    (else it waits for one, within grace). A ``cancelled`` answer is not read back here:
    ``verify_cancel`` does that, once, for the stops that confirm.
    """
    quick = _quick(client)
    started = anyio.current_time()
    tries = _Tries()
    status: str | None = None
    error: str | None = None
    with anyio.move_on_after(grace, shield=True) as budget:
        try:
            if slot_held:
                status = await _send(quick, response_id, lean, tries)
            else:
                async with cancel_slots(client):
                    status = await _send(quick, response_id, lean, tries)
        except openai.NotFoundError:
            status = "gone"
            tries.read_back = True
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    attempts = tries.count
    latency = anyio.current_time() - started
    if budget.cancelled_caught:
        error = f"no answer within grace={grace!r}s after {attempts} attempt(s)"
    return _receipt(response_id, status, attempts, latency, error, tries.read_back)


def unsent(response_id: str, *, grace: float, latency: float) -> CancelReceipt:
    """The receipt of a cancel that waited for a slot until its grace ran out: never sent."""
    error = f"no answer within grace={grace!r}s after 0 attempt(s)"
    return _receipt(response_id, None, 0, latency, error, False)


def _receipt(
    response_id: str,
    status: str | None,
    attempts: int,
    latency: float,
    error: str | None,
    confirmed: bool,
) -> CancelReceipt:
    if error is not None:
        log.warning("could not confirm the cancel of response %s: %s", response_id, error)
    return CancelReceipt(
        response_id=response_id,
        kind="server",
        status=status,
        attempts=attempts,
        latency=latency,
        error=error,
        confirmed=confirmed and error is None,
    )


def needs_verifying(receipt: CancelReceipt | None) -> bool:
    """Whether *receipt* is a ``cancelled`` answer the server has not confirmed yet.

    The API's cancel is best effort (openai-python #2643): the answer ``cancelled`` does
    not say that the response stopped; only a read-back does.
    """
    return (
        receipt is not None
        and receipt.kind == "server"
        and receipt.status == "cancelled"
        and not receipt.confirmed
    )


async def verify_cancel(
    client: AsyncOpenAI, receipt: CancelReceipt, *, deadline: float, lean: LeanTarget | None
) -> CancelReceipt:
    """Read back a response the server answered ``cancelled``: what did it finally do?

    One ``retrieve`` when the cancel was honoured (the usual case); while the server still
    reports it generating (a best-effort cancel that was not honoured), read again until it
    is final or *deadline* passes. Never raises an ``Exception``; a shielded wait, bounded
    by *deadline*. The receipt that comes back is ``confirmed`` if the server's final
    status was read; otherwise it says what was last seen and why it is not confirmed.
    """
    response_id = receipt.response_id or ""
    seen: str | None = None
    tokens: int | None = None
    error: str | None = None
    with anyio.CancelScope(shield=True, deadline=deadline) as bound:
        try:
            try:
                seen, tokens = await _confirm(_quick(client), response_id, lean)
            except (openai.AuthenticationError, openai.PermissionDeniedError):
                if lean is None:
                    raise
                seen, tokens = await _confirm(_quick(client), response_id, None)  # as in _send
        except openai.NotFoundError:
            seen = "gone"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    if bound.cancelled_caught:
        error = (
            "the server answered cancelled, but the response was still generating when "
            "grace ran out (a best-effort cancel): it may still be generating"
        )
        seen = "in_progress"
    if error is not None:
        log.warning("could not verify the cancel of response %s: %s", response_id, error)
        return attrs.evolve(receipt, status=seen or receipt.status, error=error)
    if seen not in ("cancelled", "gone"):
        log.warning(
            "response %s was answered cancelled but ended %s: the cancel was not honoured",
            response_id,
            seen,
        )
    return attrs.evolve(receipt, status=seen, confirmed=True, output_tokens=tokens)
