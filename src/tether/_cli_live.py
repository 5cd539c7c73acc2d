"""The live view of ``tether race`` and ``tether demo``: a table of attempts, refreshed as they run.

The race runs under the table (rich's ``Live``); Ctrl-C cancels it (the losers' cancels
still go out) and returns None.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING, Any

import anyio
import openai

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from ._outcome import CancelReceipt
    from ._stream import GuardedStream
    from .races import RaceAttempt, RaceEvent, RaceResult
    from .testing import ResponsesEmulator

__all__ = ["one_line", "race_live"]

_STATES = {
    "pending": "[dim]waiting[/]",
    "queued": "[cyan]queued[/]",
    "streaming": "[blue]streaming[/]",
    "won": "[bold green]won[/]",
    "lost": "[yellow]cancelled[/]",
    "rejected": "[magenta]rejected[/]",
    "failed": "[red]failed[/]",
    "cancelled": "[yellow]cancelled[/]",
    "skipped": "[dim]not sent[/]",
}


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:
        cause = " ".join(str(exc.__cause__).split()) or type(exc.__cause__).__name__
        text = f"{text} ({cause})"  # say why: refused, unknown host, TLS...
    return text if len(text) <= 200 else text[:197] + "..."


async def race_live(
    console: Console,
    emu: ResponsesEmulator | None,
    base_url: str | None,
    requests: list[dict[str, Any]],
    args: Any,
) -> RaceResult | None:
    """Run the race under a live table; ``None`` if Ctrl-C stopped it (after the cancels)."""
    from rich.live import Live

    from . import observe
    from ._race import race

    if emu is not None:
        client = emu.async_client()
    else:  # the key comes from the environment: never printed, never on the command line
        key = os.environ.get("OPENAI_API_KEY") or "sk-no-key"
        client = openai.AsyncOpenAI(api_key=key, base_url=base_url)
    win = "first_token" if getattr(args, "win", None) == "first_token" else "first_completed"
    board = _Board(win, [request.get("model") for request in requests])
    result: RaceResult | None = None
    failure: Exception | None = None
    async with client:
        interrupted = False
        # auto_refresh=False: the event loop redraws it, no refresh thread of rich's own.
        with Live(_table(board), console=console, auto_refresh=False) as live:
            async with anyio.create_task_group() as watchers:
                race_scope = anyio.CancelScope()

                async def on_interrupt(*, task_status: TaskStatus[None]) -> None:
                    nonlocal interrupted
                    with contextlib.ExitStack() as stack:
                        try:
                            signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT))
                        except NotImplementedError:  # Windows on asyncio: KeyboardInterrupt
                            task_status.started()
                            return
                        task_status.started()
                        async for _ in signals:
                            interrupted = True
                            race_scope.cancel()  # every attempt is cancelled on the server
                            return

                await watchers.start(on_interrupt)
                watchers.start_soon(_refresh, live, board)
                with race_scope, observe.observing(board):
                    try:
                        result = await race(
                            client,
                            requests,
                            win=win,
                            stagger=getattr(args, "stagger", None),
                            grace=getattr(args, "grace", 5.0),
                        )
                    except Exception as exc:  # raised below, not wrapped by the watchers' group
                        failure = exc
                watchers.cancel_scope.cancel()
            live.update(_table(board), refresh=True)
        if not console.is_terminal:
            console.line()  # a live view printed once ends without a newline
    if failure is not None:
        raise failure
    if interrupted:
        receipts = [r for r in (_receipt(a) for a in board.ended.values()) if r is not None]
        statuses = ", ".join(str(r.status or r.error) for r in receipts) or "none had started"
        console.print(f"Interrupted: cancelled {len(receipts)} response(s) on the server ({statuses}).")  # fmt: skip
        return None
    return result


class _Board:
    """The live view's state, built from the race's progress events only (``tether.races``)."""

    def __init__(self, win: str, models: list[str | None]) -> None:
        self.win = win
        self.models = models
        self.started: dict[int, RaceEvent.AttemptStarted] = {}
        self.ended: dict[int, RaceAttempt] = {}
        self.streams: dict[int, GuardedStream] = {}  # by attempt index: the live stream
        self.winner: int | None = None
        self._index: dict[int, int] = {}  # attempt id -> index

    def __call__(self, event: object) -> None:
        from . import observe, races

        if isinstance(event, races.RaceEvent.AttemptStarted):
            self.started[event.index] = event
            self._index[event.id] = event.index
        elif isinstance(event, observe.StreamEvent.Started) and event.parent in self._index:
            self.streams[self._index[event.parent]] = event.stream
        elif isinstance(event, races.RaceEvent.Decided):
            self.winner = event.winner
        elif isinstance(event, races.RaceEvent.AttemptEnded):
            self.ended[event.attempt.index] = event.attempt


async def _refresh(live: Live, board: _Board) -> None:
    while True:
        live.update(_table(board), refresh=True)
        await anyio.sleep(0.05)


def _table(board: _Board) -> Table:
    from rich.table import Table

    now = anyio.current_time()
    table = Table(title=f"race ({board.win})", title_justify="left")
    for column in ("#", "model", "state", "tokens", "elapsed", "cancel receipt"):
        table.add_column(
            column, justify="right" if column in ("#", "tokens", "elapsed") else "left"
        )
    for index, model in enumerate(board.models):
        started = board.started.get(index)
        attempt = board.ended.get(index)
        stream = board.streams.get(index)
        elapsed, tokens, shown, state = "", "", "-", _STATES["pending"]
        if attempt is not None:
            state = _STATES[attempt.state]
            receipt = _receipt(attempt)
            if attempt.state == "lost" and receipt is not None and receipt.status != "cancelled":
                state = "[yellow]lost[/]"  # it finished before the cancel arrived
            if receipt is not None:
                shown = f"{receipt.status or receipt.error} in {receipt.latency * 1000:.0f} ms"
            elif attempt.exception is not None:
                shown = one_line(attempt.exception)[:60]
            if attempt.elapsed is not None:
                elapsed = f"{attempt.elapsed:.2f}s"
            if attempt.outcome is not None:
                tokens = str(attempt.outcome.deltas)
        elif started is not None:
            elapsed = f"{now - started.at:.2f}s"
            live = stream is not None and stream.status == "in_progress"
            state = _STATES["won" if board.winner == index else "streaming" if live else "queued"]
        table.add_row(str(index), model or "?", state, tokens, elapsed, shown)
    return table


def _receipt(attempt: RaceAttempt) -> CancelReceipt | None:
    return attempt.receipt
