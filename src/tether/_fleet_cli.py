"""The fleet commands of ``tether``: ``reap`` and ``cancel``, each printing a rich table.

``cli.py`` adds them to its parser with [`add_commands`] and runs them with [`run`]; a
[`JournalError`][tether.JournalError] (a missing journal, a file that is not one, a store
that is down) is one line on the console and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Any

import openai

from ._fleet import reap, request_cancel
from ._journal import (
    JournalEntry,
    close_if_opened,
    default_journal_path,
    open_journal,
)
from ._redact import redact_url

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ._fleet import CancelRequestReport, ReapReport
    from ._journal import Journal

__all__ = ["add_commands", "run"]

_JOURNAL_HELP = "a journal: an SQLite path, redis://... or postgresql://... (default: the per-user journal)"  # fmt: skip


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def add_commands(commands: Any) -> None:
    """Add ``reap`` and ``cancel`` to the ``tether`` parser's subcommands."""
    reaper = commands.add_parser("reap", help="cancel what dead workers left running")
    reaper.add_argument("--journal", help=_JOURNAL_HELP)
    reaper.add_argument("--base-url", help="the API the responses live on (default: OpenAI's)")
    reaper.add_argument("--grace", type=_positive, default=5.0, help="seconds per server-side cancel")  # fmt: skip
    reaper.add_argument("--include-live", action="store_true",
                        help="also entries whose owner's lease is current")  # fmt: skip
    cancel = commands.add_parser("cancel", help="stop every stream of a key, whoever owns it")
    cancel.add_argument("--journal", required=True, help=_JOURNAL_HELP)
    cancel.add_argument("--key", required=True, help="the job key the streams were opened with")
    cancel.add_argument("--base-url", help="the API, to cancel what a dead worker left")
    cancel.add_argument("--grace", type=_positive, default=5.0, help="seconds per server-side cancel")  # fmt: skip
    cancel.add_argument("--wait", type=_non_negative, default=5.0,
                        help="seconds to wait for the owners to confirm (default 5)")  # fmt: skip


def _where(journal: Journal, given: str | None) -> str:
    path = getattr(journal, "path", None)
    if path is not None:
        return str(path)
    return redact_url(given) if given else repr(journal)


def _client(base_url: str | None) -> openai.AsyncOpenAI | None:
    key = os.environ.get("OPENAI_API_KEY")  # never printed, never on the command line
    if not key and not base_url:
        return None
    return openai.AsyncOpenAI(api_key=key or "unused", base_url=base_url)


async def run(console: Console, args: Any) -> int:
    """Run ``tether reap`` or ``tether cancel``; returns the exit status."""
    given = args.journal or default_journal_path()
    journal = open_journal(given)
    try:
        return await _run(console, args, journal)
    finally:
        close_if_opened(given, journal)


async def _run(console: Console, args: Any, journal: Journal) -> int:
    await journal.check()  # never creates one: a typo is an error naming the path
    where = _where(journal, args.journal)
    client = _client(args.base_url)
    if args.command == "reap":
        if client is None:
            raise ValueError("reap needs OPENAI_API_KEY (or --base-url for another API)")
        async with client:
            report = await reap(client, journal, grace=args.grace, include_live=args.include_live)
        return _print_reap(console, where, report)
    if client is None:
        report = await request_cancel(journal, key=args.key, grace=args.grace, wait=args.wait)
    else:
        async with client:
            report = await request_cancel(
                journal, key=args.key, client=client, grace=args.grace, wait=args.wait
            )
    return _print_cancel(console, where, report)


def _table(title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("response", "key", "model", "owner", "result"):
        table.add_column(column)
    return table


def _row(table: Table, entry: JournalEntry, result: str) -> None:
    owner = f"{entry.host}:{entry.pid}"
    table.add_row(entry.response_id or "-", entry.key or "-", entry.model or "-", owner, result)


def _print_reap(console: Console, where: str, report: ReapReport) -> int:
    table = _table(f"tether reap: {where}")
    for entry, receipt in report.cancelled:
        _row(table, entry, f"[green]{receipt.status}[/]")
    for entry, receipt in report.failed:
        _row(table, entry, f"[red]not confirmed: {receipt.error}[/] (kept)")
    for entry in report.unknown:
        _row(table, entry, "[dim]no id: never created (removed)[/]")
    for entry in report.taken:
        _row(table, entry, "[dim]taken by another reaper[/]")
    for entry in report.skipped:
        _row(table, entry, f"[dim]skipped: {report.reasons.get(entry.intent, 'live owner')}[/]")
    console.print(table)
    console.print(
        f"{len(report.found)} found: {len(report.cancelled)} stopped, "
        f"{len(report.failed)} not confirmed (kept), {len(report.unknown)} without an id, "
        f"{len(report.taken)} taken by another reaper, "
        f"{len(report.skipped)} skipped (a live owner's lease, or another API)"
    )
    return 1 if report.failed else 0


def _print_cancel(console: Console, where: str, report: CancelRequestReport) -> int:
    table = _table(f"tether cancel {report.key!r}: {where}")
    for entry in report.stopped:
        _row(table, entry, "[green]stopped by its owner[/]")
    for entry, receipt in report.cancelled:
        _row(table, entry, f"[green]{receipt.status} here (owner dead)[/]")
    for entry in report.unknown:
        _row(table, entry, "[dim]no id: never created (removed)[/]")
    for entry in report.unconfirmed:
        _row(table, entry, "[red]owner alive, not confirmed[/]")
    for entry, receipt in report.failed:
        _row(table, entry, f"[red]not confirmed: {receipt.error}[/] (kept)")
    for entry in report.left:
        _row(table, entry, "[yellow]owner dead: left for reap (no API key or --base-url)[/]")
    console.print(table)
    if not report.found:
        console.print(f"[red]tether: nothing to cancel[/]: no entry with key {report.key!r}")
        return 1
    console.print(
        f"{len(report.found)} found, request heard by {report.listeners} owner(s): "
        f"{len(report.stopped)} stopped by their owner, {len(report.cancelled)} cancelled here, "
        f"{len(report.unconfirmed) + len(report.failed)} not confirmed, {len(report.left)} left"
    )
    return 0 if report.ok else 1
