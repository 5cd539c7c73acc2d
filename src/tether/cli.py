"""The ``tether`` command: watch a race live, its losers cancelled on the server.

``tether demo`` races simulated models on the embedded emulator (no network, no key);
``tether race`` races real models (or the emulator); ``tether reap`` cancels what a crashed
process left in its journal; ``tether emulator`` serves the emulator for your own tests. Needs the ``cli`` extra (rich): ``pip install "tether[cli]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import math
import os
import signal
import sqlite3
import sys
import urllib.parse
import warnings
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import openai

from . import _fleet_cli
from ._errors import RaceFailed, TetherError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.abc import TaskStatus
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from ._outcome import CancelReceipt
    from ._stream import GuardedStream
    from .races import RaceAttempt, RaceEvent, RaceResult
    from .testing import EmulatedModel, ResponsesEmulator

__all__ = ["demo_models", "main"]

_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
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


def demo_models() -> dict[str, EmulatedModel]:
    """Five simulated models with heavy-tailed time to first token: any of them may win.

    Example:
        ```python
        with ResponsesEmulator(models=demo_models()) as emu:
            ...
        ```
    """
    from .testing import EmulatedModel, Lognormal

    return {
        "gpt-5": EmulatedModel(
            tokens_per_s=140.0, length=120, latency=Lognormal(median=0.3, sigma=0.9)
        ),
        "gpt-5-mini": EmulatedModel(
            tokens_per_s=160.0, length=100, latency=Lognormal(median=0.2, sigma=0.8)
        ),
        "gpt-5-nano": EmulatedModel(
            tokens_per_s=220.0, length=90, latency=Lognormal(median=0.15, sigma=1.1)
        ),
        "o4-mini": EmulatedModel(
            tokens_per_s=260.0, length=80, latency=Lognormal(median=0.5, sigma=0.6)
        ),
        "gpt-5.4": EmulatedModel(
            tokens_per_s=120.0, length=110, latency=Lognormal(median=0.25, sigma=1.0)
        ),
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad arguments: one line, exit 1 (no usage dump, no traceback)."""
        self.exit(1, f"{self.prog}: error: {message}\n")


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535 (0: any free port), got {text!r}")
    return value


def _base_url(text: str) -> str:
    """An http(s) URL with a host: anything else would only fail later as "Connection error"."""
    try:
        url = urllib.parse.urlsplit(text)
        _ = url.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"is not a valid URL ({exc}), got {text!r}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise argparse.ArgumentTypeError(
            f"must be an http:// or https:// URL with a host, "
            f"like http://127.0.0.1:8000/v1, got {text!r}"
        )
    return text


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="tether", description="Race OpenAI responses; cancel the losers.")
    parser.add_argument("--version", action="version", version=f"tether {__version__}",
                        help="print the installed version and exit")  # fmt: skip
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND", help="one of:"
    )
    demo = commands.add_parser("demo", help="race simulated models on the embedded emulator")
    demo.add_argument("--models", type=int, default=4, choices=range(2, 6), metavar="N",
                      help="how many models race (2-5, default 4)")  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="seeds the simulated latencies (default 0)")  # fmt: skip
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio",
                      help="the event loop to run on (default asyncio)")  # fmt: skip
    run = commands.add_parser("race", help="race models on the API (or the emulator)")
    run.add_argument("prompt", help="the input sent to every model")
    run.add_argument("-m", "--model", action="append", required=True, dest="models",
                     help="a model to race (repeat: -m gpt-5 -m gpt-5-mini)")  # fmt: skip
    run.add_argument("--base-url", type=_base_url,
                     help="an OpenAI-compatible base URL, like http://127.0.0.1:8000/v1")  # fmt: skip
    run.add_argument("--stagger", type=_non_negative, help="hedge: start the next model after S s of silence")  # fmt: skip
    run.add_argument("--win", choices=("first_completed", "first_token"), default="first_completed",
                     help="what decides the race (default first_completed)")  # fmt: skip
    run.add_argument("--grace", type=_positive, default=5.0,
                     help="seconds per server-side cancel (default 5)")  # fmt: skip
    run.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio",
                     help="the event loop to run on (default asyncio)")  # fmt: skip
    _fleet_cli.add_commands(commands)  # reap, cancel
    emu = commands.add_parser("emulator", help="serve the Responses emulator until Ctrl-C")
    emu.add_argument("--port", type=_port, default=8000,
                     help="the port to bind, 0 for any free one (default 8000)")  # fmt: skip
    emu.add_argument("--host", default="127.0.0.1",
                     help="the interface to bind (default 127.0.0.1, loopback)")  # fmt: skip
    emu.add_argument("--allow-remote", action="store_true",
                     help="allow a non-loopback --host: the emulator has no authentication")  # fmt: skip
    emu.add_argument("--seed", type=int, default=0, help="seeds ids, text and latencies (default 0)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tether`` command; returns the exit status.

    Example:
        ```bash
        tether demo --models 5 --seed 3
        tether race -m gpt-5 -m gpt-5-mini --win first_token "Explain hedging"
        ```
    """
    try:
        import rich.console

        importlib.import_module("tether.testing")  # starlette, uvicorn: the embedded emulator
    except ImportError as exc:
        print(
            f"tether: the command needs the cli extra ({exc.name} is missing): "
            'pip install "tether[cli]"',
            file=sys.stderr,
        )
        return 1
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (1)
        return exc.code if isinstance(exc.code, int) else 1
    if args.command == "emulator" and args.host not in _LOOPBACK and not args.allow_remote:
        print(
            f"tether: error: --host {args.host} is not a loopback address: the emulator has no "
            "authentication, so anyone who can reach it can use it; add --allow-remote to bind it",
            file=sys.stderr,
        )
        return 1
    console = rich.console.Console(highlight=False)
    # The table shows every receipt: keep retry and cancel warnings out of the live view.
    loggers = [logging.getLogger(name) for name in ("stamina", "tether")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        return _dispatch(console, args)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _dispatch(console: Console, args: Any) -> int:
    try:
        if args.command == "emulator":
            return _emulator(console, args)
        if args.command == "demo":
            return _demo(console, args)
        if args.command in ("reap", "cancel"):
            return anyio.run(_fleet_cli.run, console, args)
        return _race_command(console, args)
    except KeyboardInterrupt:
        console.print("interrupted")
        return _INTERRUPTED
    except RaceFailed as failed:
        reasons = "; ".join(_one_line(e) for e in failed.exceptions)
        console.print(f"[red]tether: every attempt failed[/]: {reasons}", soft_wrap=True)
        return 1
    except sqlite3.Error as exc:  # a journal file that is not a SQLite database
        where = getattr(args, "journal", None) or "the journal"
        console.print(f"[red]tether: {where} is not a usable journal[/]: {exc}", soft_wrap=True)
        return 1
    except (openai.OpenAIError, TetherError, OSError, ValueError, TypeError) as exc:
        console.print(f"[red]tether: {type(exc).__name__}[/]: {_one_line(exc)}", soft_wrap=True)
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, openai.APIConnectionError) and exc.__cause__ is not None:
        cause = " ".join(str(exc.__cause__).split()) or type(exc.__cause__).__name__
        text = f"{text} ({cause})"  # say why: refused, unknown host, TLS...
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------ commands


def _emulator(console: Console, args: Any) -> int:
    from .testing import serve

    if args.host not in _LOOPBACK:  # allowed by --allow-remote: say it once, in one line
        console.print(
            f"[yellow]tether: warning[/]: the emulator listens on {args.host}, without "
            "authentication: anyone who can reach it can use it",
            soft_wrap=True,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the same warning, with a source line
        serve(port=args.port, host=args.host, seed=args.seed)
    return 0


def _demo(console: Console, args: Any) -> int:
    from .testing import ResponsesEmulator

    models = dict(list(demo_models().items())[: args.models])
    with ResponsesEmulator(models=models, seed=args.seed) as emu:
        console.print(
            f"Racing {len(models)} simulated models on the embedded Responses emulator "
            f"({emu.base_url}): first to complete wins, the others are cancelled on the server."
        )
        requests = [{"model": name, "input": "Tell me about hedged requests."} for name in models]
        result = anyio.run(_race_live, console, emu, None, requests, args, backend=args.backend)
        if result is None:
            return _INTERRUPTED
        _summary(console, result, emu)
    return 0


def _race_command(console: Console, args: Any) -> int:
    requests = [{"model": name, "input": args.prompt} for name in args.models]
    if args.base_url or os.environ.get("OPENAI_API_KEY"):
        where = args.base_url or "the OpenAI API"
        console.print(f"Racing {len(requests)} models on {where}.")
        return _race_on(console, None, args.base_url, requests, args)
    from .testing import ResponsesEmulator, default_models

    models = {**demo_models(), **default_models()}
    unknown = [name for name in args.models if name not in models]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} on the emulator; known: {sorted(models)}")
    with ResponsesEmulator(models=models) as emu:
        console.print(f"No OPENAI_API_KEY and no --base-url: racing on the embedded emulator ({emu.base_url}).")  # fmt: skip
        return _race_on(console, emu, emu.base_url, requests, args)


def _race_on(
    console: Console,
    emu: ResponsesEmulator | None,
    base_url: str | None,
    requests: list[dict[str, Any]],
    args: Any,
) -> int:
    result = anyio.run(_race_live, console, emu, base_url, requests, args, backend=args.backend)
    if result is None:
        return _INTERRUPTED
    _summary(console, result, emu)
    response = result.winner.response
    if response is not None:
        console.print(response.output_text, soft_wrap=True)
    return 0


async def _race_live(
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
                shown = _one_line(attempt.exception)[:60]
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


def _summary(console: Console, result: RaceResult, emu: ResponsesEmulator | None) -> None:
    winner = result.winner
    console.print(
        f"[bold green]winner[/]: #{winner.index} {winner.model} in "
        f"{result.decided_at - result.started_at:.2f}s; {_stopped(result)}"
    )
    if emu is None:
        return
    saved = after = 0
    for loser in result.losers:
        if loser.outcome is None or loser.outcome.response_id is None:
            continue
        record = emu.ledger[loser.outcome.response_id]
        saved += max(0, emu.models[record.model].length - record.tokens_generated)
        after += record.tokens_after_cancel
    orphans = len(emu.ledger.orphans())
    generating = sum(1 for record in emu.ledger if record.generating)
    console.print(
        f"tokens saved versus letting the losers run: {saved} "
        f"({after} generated after the cancels arrived)"
    )
    console.print(
        f"ledger: {len(emu.ledger)} responses, {orphans} orphans, {generating} still generating"
    )


def _stopped(result: RaceResult) -> str:
    """The losers' stop and the winner's read, timed apart from the decision."""
    lost = [a.receipt for a in result.losers if a.state == "lost"]
    parts = [f"{len(result.losers)} loser(s) stopped"]
    if lost:
        confirmed = sum(1 for receipt in lost if receipt is not None and receipt.stopped)
        which = "all confirmed" if confirmed == len(lost) else f"{confirmed}/{len(lost)} confirmed"
        took = max(result.losers_confirmed_at - result.decided_at, 0.0)
        parts[0] += f", {which} {took:.3f}s after the decision"
    if result.win == "first_token":  # decided before its answer: read on after the decision
        took = max(result.winner_ended_at - result.decided_at, 0.0)
        parts.append(f"its answer read to the end {took:.3f}s after it")
    return "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
