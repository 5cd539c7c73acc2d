"""tether for ``openai.OpenAI``: guarded streams and races in plain, blocking code.

The contract of openai-python PR #2916 (never merged), without patching the SDK:
``stream.response_id``, a ``stream.cancel()`` that cancels on the server **and** closes the
stream (the close guaranteed even when the cancel fails), no deadlock on a pool of one
connection; plus everything [`tether.guarded_stream`][tether.guarded_stream] does: a
``break``, an exception, Ctrl-C or a ``deadline`` in the ``with`` body closes the stream
and cancels the response on the server within ``grace``. [`race`][tether.sync.race] is
[`tether.race`][tether.race] for the sync client.

How it works: the async implementation runs, unchanged, in an anyio blocking portal: an
asyncio event loop in a thread of its own, one per ``with`` block (or ``race`` call),
joined when it exits, so nothing is left running. The portal reaches the server through
an ``AsyncOpenAI`` configured like your ``OpenAI``: same key (or key provider), base URL,
organization, project, headers, query, timeout and retries; Azure clients keep their API
version, AD token and deployment. Each event crosses from the loop to your thread (about
0.1 ms each); the cancel protocol is the async one, written once.

Your ``http_client``: the SDK's default maps to the async SDK's default. An
``httpx2.Client`` you built is mirrored on the async side: pool limits (a pool of one
stays a pool of one), TLS context, HTTP/2, transport retries, timeouts, headers, auth,
redirects, event hooks and ``trust_env`` (proxies from the environment). A custom
transport or an explicit ``proxy=`` cannot be mirrored: pass
``async_http_client=httpx2.AsyncClient(...)`` configured the same way (tether closes it).
Connections are not shared between blocks: each block opens its own.

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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _race, _stream
from ._scope import open_scope
from ._sync_client import async_twin
from ._sync_portal import run
from ._sync_stream import GuardedStream
from ._validate import check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

    import openai
    from openai import DefaultAsyncHttpxClient
    from openai.types.responses import Response

    from ._hedging import AdaptiveStagger as Adaptive
    from ._outcome import DetachedResponse
    from ._race_records import RaceResult, WinCondition

__all__ = ["GuardedStream", "guarded_stream", "race", "resume"]

GuardedStream.__module__ = __name__  # documented and shown as tether.sync.GuardedStream


def guarded_stream(
    client: openai.OpenAI,
    *,
    background: bool = True,
    grace: float | None = None,
    deadline: float | None = None,
    first_event_timeout: float | None = None,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    async_http_client: DefaultAsyncHttpxClient | None = None,
    **create_kwargs: Any,
) -> GuardedStream:
    """Stream a response from sync code; it is cancelled on the server whenever you stop early.

    The sync face of [`tether.guarded_stream`][tether.guarded_stream], and the contract of
    openai-python PR #2916: ``response_id``, ``cancel()``, the close guaranteed, no pool
    deadlock. Entering sends ``client.responses.create(stream=True, background=True,
    **create_kwargs)`` and waits for ``response.created``, so ``stream.response_id`` is known
    before your code runs. Leaving early (``break``, an exception, Ctrl-C, ``deadline``)
    closes the stream, cancels the response on the server within ``grace``, and goes on:
    exceptions propagate unchanged.

    Args:
        client: An ``openai.OpenAI`` (or ``AzureOpenAI``). tether talks to the server through
            an ``AsyncOpenAI`` configured the same way; a custom ``http_client`` is mirrored,
            pool limits included.
        background: Run the response in background mode, the only mode the server can cancel.
        grace: Seconds the server-side cancel may take (default 5).
        deadline: Seconds for the whole ``with`` block, or ``None``. When it passes, the
            stream is stopped and cancelled on the server at once, even while the body runs
            its own code, and the block raises [`DeadlineExceeded`][tether.DeadlineExceeded].
        first_event_timeout: Seconds to wait for ``response.created`` (default 10).
        first_token_timeout: Seconds from the request to the first output delta, or ``None``.
        idle_timeout: Seconds without any event, or ``None``.
        async_http_client: The ``httpx2.AsyncClient`` to use instead of mirroring the sync
            client's (needed for a custom transport or an explicit proxy). tether closes it
            when the block exits.
        **create_kwargs: Passed to ``client.responses.create`` (``model``, ``input``, ...).

    Returns:
        A [`tether.sync.GuardedStream`][tether.sync.GuardedStream], to use as ``with``.

    Raises:
        DeadlineExceeded: The deadline passed (after the response was cancelled).
        StallError: A stall timeout fired (after the response was cancelled).
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
    limit = check_timeout("deadline", deadline)
    twin = async_twin(client, http_client=async_http_client)
    stream = _stream.build_guard(
        twin,
        background=background,
        grace=grace,
        first_event_timeout=first_event_timeout,
        first_token_timeout=first_token_timeout,
        idle_timeout=idle_timeout,
        **create_kwargs,
    )
    return GuardedStream(stream, twin, limit)


def resume(
    client: openai.OpenAI,
    handle: DetachedResponse,
    *,
    grace: float | None = None,
    deadline: float | None = None,
    first_event_timeout: float | None = None,
    idle_timeout: float | None = None,
    async_http_client: DefaultAsyncHttpxClient | None = None,
) -> GuardedStream:
    """Guard a background response again, from where a detached stream left it.

    The sync face of [`tether.resume`][tether.resume]: streams the events after the handle's
    sequence number, then live ones, guarded like any other stream.

    Args:
        client: An ``openai.OpenAI``.
        handle: What [`detach`][tether.sync.GuardedStream.detach] returned.
        grace: Seconds the server-side cancel may take (default 5).
        deadline: Seconds for the whole ``with`` block, or ``None``.
        first_event_timeout: Seconds to wait for the stream to open (default 10).
        idle_timeout: Seconds without any event, or ``None``.
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
    limit = check_timeout("deadline", deadline)
    twin = async_twin(client, http_client=async_http_client)
    stream = _stream.resume_guard(
        twin,
        handle,
        grace=grace,
        first_event_timeout=first_event_timeout,
        idle_timeout=idle_timeout,
    )
    return GuardedStream(stream, twin, limit)


def race(
    client: openai.OpenAI,
    requests: Sequence[Mapping[str, Any]],
    *,
    win: WinCondition | Callable[[Response], bool] = _race.first_completed,
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
        client: An ``openai.OpenAI`` (see [`guarded_stream`][tether.sync.guarded_stream] for
            how it is carried over to the async side).
        requests: ``responses.create`` kwargs, one dict per attempt; each may carry its own
            ``client=`` (another ``openai.OpenAI``) and any guarded-stream option.
        win: [`first_completed`][tether.first_completed] (default),
            [`first_token`][tether.first_token], or a ``Callable[[Response], bool]``.
        stagger: ``None`` (all at once), seconds, or [`adaptive`][tether.adaptive].
        grace: Seconds each loser's server-side cancel may take (default 5).
        max_concurrency: At most this many attempts in flight at once.
        deadline: Seconds for the whole race, or ``None``: then every attempt is cancelled
            on the server and [`DeadlineExceeded`][tether.DeadlineExceeded] is raised.
        async_http_client: See [`guarded_stream`][tether.sync.guarded_stream] (for *client*).

    Returns:
        A [`RaceResult`][tether.RaceResult]; ``result.winner.response`` is the final response.

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
    limit = check_timeout("deadline", deadline)
    twin = async_twin(client, http_client=async_http_client, instead="tether.race")
    twins: dict[int, openai.AsyncOpenAI] = {id(client): twin}
    attempts = _with_async_clients(requests, twins)

    async def main() -> RaceResult:
        if limit is None:
            return await _race.race(
                twin,
                attempts,
                win=win,
                stagger=stagger,
                grace=grace,
                max_concurrency=max_concurrency,
            )
        async with open_scope(twin, deadline=limit, max_concurrency=max_concurrency) as scope:
            return await _race.race(scope, attempts, win=win, stagger=stagger, grace=grace)

    async def close_clients() -> None:
        for each in twins.values():
            await each.close()

    return run(main, close_clients)


def _with_async_clients(
    requests: Sequence[Mapping[str, Any]], twins: dict[int, openai.AsyncOpenAI]
) -> Sequence[Mapping[str, Any]]:
    """*requests* with each ``client=`` replaced by its async twin (one twin per client).

    Anything malformed is left as is, for ``race`` to reject with its own message.
    """
    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
        return requests
    converted: list[Mapping[str, Any]] = []
    for index, request in enumerate(requests):
        if isinstance(request, Mapping) and "client" in request:
            own = request["client"]
            if id(own) not in twins:
                try:
                    twins[id(own)] = async_twin(own, instead="tether.race")
                except TypeError as exc:
                    raise TypeError(f"requests[{index}]['client']: {exc}") from None
            request = {**request, "client": twins[id(own)]}
        converted.append(request)
    return converted
