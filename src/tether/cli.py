"""The ``tether`` command: watch a race live, its losers cancelled on the server.

``tether demo`` races simulated models on the embedded emulator (no network, no key);
``tether race`` races real models (or the emulator); ``tether reap`` cancels what a crashed
process left in its journal; ``tether emulator`` serves the emulator for your own tests. Needs the ``cli`` extra (rich): ``pip install "tether[cli]"``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sqlite3
import sys
import urllib.parse
import warnings
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import openai

from . import _fleet_cli
from ._cli_live import one_line, race_live
from ._errors import RaceFailed, TetherError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from .races import RaceResult
    from .testing import EmulatedModel, ResponsesEmulator

__all__ = ["demo_models", "main"]

_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def demo_models() -> dict[str, EmulatedModel]:
    """Five simulated models with heavy-tailed time to first token: any of them may win.

    Example:
        ```python
        with ResponsesEmulator(models=demo_models()) as emu:
            ...
        ```
    """
    from .testing import EmulatedModel

    return {
        "gpt-5": EmulatedModel(
            tokens_per_s=140.0, length=120, latency=EmulatedModel.Lognormal(median=0.3, sigma=0.9)
        ),
        "gpt-5-mini": EmulatedModel(
            tokens_per_s=160.0, length=100, latency=EmulatedModel.Lognormal(median=0.2, sigma=0.8)
        ),
        "gpt-5-nano": EmulatedModel(
            tokens_per_s=220.0, length=90, latency=EmulatedModel.Lognormal(median=0.15, sigma=1.1)
        ),
        "o4-mini": EmulatedModel(
            tokens_per_s=260.0, length=80, latency=EmulatedModel.Lognormal(median=0.5, sigma=0.6)
        ),
        "gpt-5.4": EmulatedModel(
            tokens_per_s=120.0, length=110, latency=EmulatedModel.Lognormal(median=0.25, sigma=1.0)
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
        reasons = "; ".join(one_line(e) for e in failed.exceptions)
        console.print(f"[red]tether: every attempt failed[/]: {reasons}", soft_wrap=True)
        return 1
    except sqlite3.Error as exc:  # a journal file that is not a SQLite database
        where = getattr(args, "journal", None) or "the journal"
        console.print(f"[red]tether: {where} is not a usable journal[/]: {exc}", soft_wrap=True)
        return 1
    except (openai.OpenAIError, TetherError, OSError, ValueError, TypeError) as exc:
        console.print(f"[red]tether: {type(exc).__name__}[/]: {one_line(exc)}", soft_wrap=True)
        return 1


# ------------------------------------------------------------------------ commands


def _emulator(console: Console, args: Any) -> int:
    from .testing import ResponsesEmulator

    if args.host not in _LOOPBACK:  # allowed by --allow-remote: say it once, in one line
        console.print(
            f"[yellow]tether: warning[/]: the emulator listens on {args.host}, without "
            "authentication: anyone who can reach it can use it",
            soft_wrap=True,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the same warning, with a source line
        ResponsesEmulator.serve(port=args.port, host=args.host, seed=args.seed)
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
        result = anyio.run(race_live, console, emu, None, requests, args, backend=args.backend)
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
    from .testing import EmulatedModel, ResponsesEmulator

    models = {**demo_models(), **EmulatedModel.defaults()}
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
    result = anyio.run(race_live, console, emu, base_url, requests, args, backend=args.backend)
    if result is None:
        return _INTERRUPTED
    _summary(console, result, emu)
    response = result.winner.response
    if response is not None:
        console.print(response.output_text, soft_wrap=True)
    return 0


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
