"""tether for ``openai.OpenAI``: guarded streams and races in plain, blocking code.

The contract of openai-python PR #2916 (never merged), without patching the SDK:
``stream.response_id``, a ``stream.cancel()`` that cancels on the server **and** closes the
stream (the close guaranteed even when the cancel fails), no deadlock on a pool of one
connection; plus everything [`tether.guarded_stream`][tether.guarded_stream] does: a
``break``, an exception, Ctrl-C or a ``deadline`` in the ``with`` body closes the stream
and cancels the response on the server within ``grace``. [`race`][tether.sync.race] is
[`tether.race`][tether.race] for the sync client.

How it works: the async implementation runs, unchanged, in an anyio blocking portal: an
event loop in a thread of its own, owned by a [`Scope`][tether.sync.Scope] (from
[`open_scope`][tether.sync.open_scope], shared by its blocks; or made for one block when
you pass a bare client) and joined when it exits, so nothing is left running. The portal
reaches the server through an ``AsyncOpenAI`` configured like your ``OpenAI``: same key
(or key provider), base URL, organization, project, headers, query, timeout and retries;
Azure clients keep their API version, AD token and deployment. A task on the loop reads
the stream ahead of you into a buffer your thread drains, crossing to the loop only when
it is empty: iterating costs about what the raw sync SDK costs. The cancel protocol is the
async one, written once.

Your ``http_client``: the SDK's default maps to the async SDK's default. An
``httpx2.Client`` you built is mirrored on the async side: pool limits (a pool of one
stays a pool of one), TLS context, HTTP/2, transport retries, timeouts, headers, auth,
redirects, event hooks and ``trust_env`` (proxies from the environment). A custom
transport or an explicit ``proxy=`` cannot be mirrored: pass
``async_http_client=httpx2.AsyncClient(...)`` configured the same way (tether closes it).
Connections are shared by the blocks of one ``open_scope``; with a bare client, each block
opens its own.

Threads: ``cancel()`` may be called from any thread (a UI's stop button) while another
thread iterates; that iteration then simply ends. The rest belongs to the thread that
entered the ``with`` block, which need not be the main thread.

Ctrl-C: a ``KeyboardInterrupt`` that arrives while your thread waits on the portal (or
while the body runs) stops the stream through the same cleanup path, then propagates;
``outcome.reason`` is ``"interrupted"``. During the open, the response's id is awaited
first (under the shield that keeps it from becoming an orphan), then it is cancelled.
Cleanup is bounded by ``grace``; a second Ctrl-C during it is raised once it is done.

Example:
    ```python
    import openai
    import tether.sync

    client = openai.OpenAI()
    with tether.sync.guarded_stream(client, model="gpt-5", input="Write an essay") as stream:
        for text in stream.text_deltas():
            print(text, end="")
            if "enough" in text:
                receipt = stream.cancel()   # closes the stream, cancels on the server
                break
    print(stream.outcome.reason)            # "explicit"
    ```
"""

from __future__ import annotations

from contextlib import nullcontext as _nullcontext
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._build import StreamOptions, build_guard, resume_guard
from ._public import claim as _claim
from ._race import race as _async_race
from ._scope import DEFAULT_FIRST_EVENT_TIMEOUT as _DEFAULT_FIRST_EVENT_TIMEOUT
from ._scope import DEFAULT_GRACE as _DEFAULT_GRACE
from ._sync_scope import Scope, open_scope
from ._sync_stream import GuardedStream

if _TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    import openai
    from openai import DefaultAsyncHttpxClient

    from ._hedging import AdaptiveStagger as Adaptive
    from ._outcome import DetachedResponse
    from ._race_records import RaceResult, Win

__all__ = ["GuardedStream", "Scope", "guarded_stream", "open_scope", "race", "resume"]

_claim(__name__, globals(), ["GuardedStream", "Scope", "open_scope"])  # shown as tether.sync.*


def _as_scope(
    scope: object,
    *,
    deadline: float | None,
    max_concurrency: int | None = None,
    async_http_client: Any,
    instead: str,
) -> tuple[Scope, bool]:
    """*scope* itself (not owned), or a scope of its own for a bare ``OpenAI`` (owned)."""
    import openai

    if isinstance(scope, Scope):
        for name, value in (("deadline", deadline), ("async_http_client", async_http_client)):
            if value is not None:
                raise ValueError(
                    f"{name}= applies to a bare client; with a tether.sync.Scope, pass it to "
                    f"tether.sync.open_scope(), got {name}={value!r}"
                )
        return scope, False
    if isinstance(scope, openai.AsyncOpenAI):
        raise TypeError(
            f"scope must be a tether.sync.Scope or an openai.OpenAI, got {scope!r}: "
            f"use {instead} for the async client"
        )
    if not isinstance(scope, openai.OpenAI):
        raise TypeError(f"scope must be a tether.sync.Scope or an openai.OpenAI, got {scope!r}")
    owned = Scope(
        scope,
        deadline=deadline,
        grace=_DEFAULT_GRACE,
        first_event_timeout=_DEFAULT_FIRST_EVENT_TIMEOUT,
        max_concurrency=max_concurrency,
        confirm=True,
        journal=None,
        async_http_client=async_http_client,
        instead=instead,
    )
    return owned, True


def guarded_stream(
    scope: Scope | openai.OpenAI,
    *,
    background: bool = True,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    async_http_client: DefaultAsyncHttpxClient | None = None,
    **create_kwargs: Any,
) -> GuardedStream:
    """Stream a response from sync code; it is cancelled on the server whenever you stop early.

    The sync face of [`tether.guarded_stream`][tether.guarded_stream], and the contract of
    openai-python PR #2916: ``response_id``, ``cancel()``, the close guaranteed, no pool
    deadlock. Entering sends ``client.responses.create(stream=True, background=True,
    **create_kwargs)`` and waits for ``response.created``, so ``stream.response_id`` is known
    before your code runs. Leaving early (``break``, an exception, Ctrl-C, the deadline)
    closes the stream, cancels the response on the server within ``grace``, and goes on:
    exceptions propagate unchanged.

    Args:
        scope: A [`tether.sync.Scope`][tether.sync.Scope] from
            [`open_scope`][tether.sync.open_scope] (its deadline, grace and event loop
            apply), or an ``openai.OpenAI`` (or ``AzureOpenAI``) for a block of its own.
            tether talks to the server through an ``AsyncOpenAI`` configured the same way;
            a custom ``http_client`` is mirrored, pool limits included.
        background: Run the response in background mode, the only mode the server can cancel.
        grace: Seconds the server-side cancel may take (default: the scope's, 5).
        first_event_timeout: Seconds to wait for ``response.created`` (default: the
            scope's, 10).
        first_token_timeout: Seconds from the request to the first output delta, or ``None``.
        idle_timeout: Seconds without any event, or ``None``.
        deadline: With a bare client only: seconds for the whole ``with`` block, or
            ``None``. When it passes, the stream is stopped and cancelled on the server at
            once, even while the body runs its own code, and the block raises
            [`DeadlineExceeded`][tether.DeadlineExceeded]. (A scope has its own deadline.)
        async_http_client: With a bare client only: the ``httpx2.AsyncClient`` to use
            instead of mirroring the sync client's (needed for a custom transport or an
            explicit proxy). tether closes it when the block exits.
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`tether.sync.GuardedStream`][tether.sync.GuardedStream], to use as ``with``.

    Raises:
        DeadlineExceeded: The deadline passed (after the response was cancelled).
        StallError: A stall timeout fired (after the response was cancelled).
        TetherError: The scope was cancelled before the stream opened (nothing was sent).
        TypeError: An ``AsyncOpenAI`` (use ``tether.guarded_stream``), a bad argument type, or
            no ``model``. Checked before any request.
        ValueError: ``stream=`` given, or a timeout out of range. Checked before any request.

    Example:
        ```python
        with tether.sync.guarded_stream(client, model="gpt-5", input="Essay", deadline=30) as s:
            for text in s.text_deltas():
                if enough(text):
                    break                      # cancelled on the server, not just dropped
        print(s.outcome.receipt)
        ```

    Added in version 0.1.
    """
    the_scope, owns = _as_scope(
        scope,
        deadline=deadline,
        async_http_client=async_http_client,
        instead="tether.guarded_stream",
    )
    guard = build_guard(
        the_scope.async_scope,
        StreamOptions(
            background=background,
            grace=grace,
            first_event_timeout=first_event_timeout,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
        ),
        create_kwargs,
    )
    return GuardedStream(guard, the_scope, owns_scope=owns)


def resume(
    scope: Scope | openai.OpenAI,
    handle: DetachedResponse,
    *,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    idle_timeout: float | None = None,
    deadline: float | None = None,
    async_http_client: DefaultAsyncHttpxClient | None = None,
) -> GuardedStream:
    """Guard a background response again, from where a detached stream left it.

    The sync face of [`tether.resume`][tether.resume]: streams the events after the handle's
    sequence number, then live ones, guarded like any other stream.

    Args:
        scope: A [`tether.sync.Scope`][tether.sync.Scope], or an ``openai.OpenAI``.
        handle: What [`detach`][tether.sync.GuardedStream.detach] returned.
        grace: Seconds the server-side cancel may take (default: the scope's, 5).
        first_event_timeout: Seconds to wait for the stream to open (default: the scope's).
        idle_timeout: Seconds without any event, or ``None``.
        deadline: With a bare client only: seconds for the whole ``with`` block, or ``None``.
        async_http_client: See [`guarded_stream`][tether.sync.guarded_stream].

    Returns:
        A [`tether.sync.GuardedStream`][tether.sync.GuardedStream], to use as ``with``.

    Example:
        ```python
        with tether.sync.resume(client, handle) as stream:
            print(stream.get_final_response().output_text)
        ```

    Added in version 0.1.
    """
    the_scope, owns = _as_scope(
        scope, deadline=deadline, async_http_client=async_http_client, instead="tether.resume"
    )
    guard = resume_guard(
        the_scope.async_scope,
        handle,
        grace=grace,
        first_event_timeout=first_event_timeout,
        idle_timeout=idle_timeout,
    )
    return GuardedStream(guard, the_scope, owns_scope=owns)


def race(
    scope: Scope | openai.OpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: Win = "first_completed",
    stagger: float | Adaptive | None = None,
    grace: float | None = None,
    max_concurrency: int | None = None,
    deadline: float | None = None,
    async_http_client: DefaultAsyncHttpxClient | None = None,
) -> RaceResult:
    """Send several requests for one answer, keep the first that wins, cancel the rest on the server.

    [`tether.race`][tether.race] for the sync client, with the same semantics and records:
    the losers are closed and cancelled on the server concurrently, each with its receipt,
    and the call returns once every loser is confirmed cancelled or out of grace. Ctrl-C
    cancels every attempt on the server, then propagates.

    Args:
        scope: A [`tether.sync.Scope`][tether.sync.Scope], or an ``openai.OpenAI`` (see
            [`guarded_stream`][tether.sync.guarded_stream] for how it is carried over to
            the async side).
        requests: ``responses.create`` kwargs, one dict per attempt; each may carry its own
            ``client=`` (another ``openai.OpenAI``) and any guarded-stream option.
        win: ``"first_completed"`` (default), ``"first_token"``, or a
            ``Callable[[Response], bool]``.
        stagger: ``None`` (all at once), seconds, or [`adaptive`][tether.adaptive].
        grace: Seconds each loser's server-side cancel may take (default 5).
        max_concurrency: With a bare client: at most this many attempts in flight at once.
        deadline: With a bare client: seconds for the whole race, or ``None``: then every
            attempt is cancelled on the server and
            [`DeadlineExceeded`][tether.DeadlineExceeded] is raised.
        async_http_client: See [`guarded_stream`][tether.sync.guarded_stream] (for *scope*).

    Returns:
        A [`RaceResult`][tether.races.RaceResult]; ``result.winner.response`` is the final response.

    Raises:
        RaceFailed: No attempt won (every error, every outcome).
        DeadlineExceeded: The deadline passed (every attempt was cancelled first).
        TypeError: An ``AsyncOpenAI`` (use ``tether.race``) or another bad argument type.
        ValueError: An argument out of range. Arguments are checked before any request.

    Example:
        ```python
        result = tether.sync.race(client, [
            dict(model="gpt-5", input=question),
            dict(model="gpt-5-mini", input=question),
        ])
        print(result.winner.model, result.winner.response.output_text)
        ```

    Added in version 0.1.
    """
    the_scope, owns = _as_scope(
        scope,
        deadline=deadline,
        max_concurrency=max_concurrency,
        async_http_client=async_http_client,
        instead="tether.race",
    )
    attempts = _with_async_clients(requests, the_scope)
    limit = None if owns else max_concurrency

    async def main() -> RaceResult:
        return await _async_race(
            the_scope.async_scope,
            attempts,
            win=win,
            stagger=stagger,
            grace=grace,
            max_concurrency=limit,
        )

    with the_scope if owns else _nullcontext(the_scope):
        return the_scope.run(main, "race()")


def _with_async_clients(
    requests: Sequence[Mapping[str, Any]], scope: Scope
) -> Sequence[Mapping[str, Any]]:
    """*requests* with each ``client=`` replaced by its async twin (one twin per client).

    Anything malformed is left as is, for ``race`` to reject with its own message.
    """
    from collections.abc import Mapping, Sequence

    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        return requests
    converted: list[Mapping[str, Any]] = []
    for index, request in enumerate(requests):
        if isinstance(request, Mapping) and "client" in request:
            request = {**request, "client": scope.twin(request["client"], index)}
        converted.append(request)
    return converted


def __dir__() -> list[str]:
    return list(__all__)
