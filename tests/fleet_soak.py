"""The Ctrl-C soak of a fleet: three worker processes, a SIGKILL, a reap, a cancel request, SIGINT.

One *trial* is the scenario of issue 24 (item 12), with real processes on a real store:

1. three workers (``tests/fleet_child.py pair``), each one scope on ``open_journal(URL,
   lease=LEASE)`` with two slow background streams in a task group;
2. the first worker is SIGKILLed; once its lease ran out (the store's clock), this process
   reaps: its two responses are cancelled, the others skipped;
3. ``request_cancel`` of one key of the second worker (a pub/sub message, or NOTIFY, that
   every worker's listener sees): that stream stops, its owner confirms;
4. both live workers get SIGINT (Ctrl-C): each must exit within ``EXIT_BOUND`` seconds, by
   ``KeyboardInterrupt`` (exit status -SIGINT), and every one of the six responses must then
   be stopped on the server (the emulator's ledger).

Before the fix of issue 24's item 12, about 1 trial in 40 on trio (loaded machine, ``--seed 7``)
left a worker running: trio raised the ``KeyboardInterrupt`` inside code whose exceptions
Python ignores ("Exception ignored in: ..." in the worker's stderr, kept in the verdict).

A worker that does not exit is sent SIGUSR1 first (it dumps its threads' stacks on stderr,
kept in the verdict), then SIGKILL. The suite runs a few trials (``test_fleet_processes.py``);
by hand, many: ``python -m tests.fleet_soak --trials 50 --backend trio --store redis``.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import attrs

import tether
from tests.support import lease_ran_out
from tether.testing import ResponsesEmulator

CHILD = Path(__file__).with_name("fleet_child.py")
EXIT_BOUND = 15.0  # seconds a worker may take to exit after SIGINT (its grace is 3 s)


@attrs.define
class Verdict:
    """What one trial saw: empty ``problems`` means every promise held."""

    problems: list[str] = attrs.field(factory=list)
    stacks: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_SIGINT_RAISES = {"trio": True, "asyncio": sys.version_info >= (3, 11)}
"""Whether SIGINT ends a worker of the backend with KeyboardInterrupt (asyncio: from 3.11)."""


def _start(
    base_url: str, journal: str, key: str, backend: str, lease: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), "pair", base_url, journal, key, backend, str(lease)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _line(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    with anyio.fail_after(30):
        return (await anyio.to_thread.run_sync(process.stdout.readline)).split()


async def _exited(process: subprocess.Popen[str], bound: float) -> bool:
    try:
        await anyio.to_thread.run_sync(process.wait, bound)
    except subprocess.TimeoutExpired:
        return False
    return True


async def trial(
    emulator: ResponsesEmulator,
    journal_url: str,
    backend: str,
    lease: float = 1.0,
    jitter: random.Random | None = None,
) -> Verdict:
    """Run the scenario once; every worker is gone at the end, whatever happened.

    With *jitter* (the soak by hand), the SIGINTs come at a random moment instead of after
    the request's confirmation: while the owner stops w1-a, or up to 1.5 s later.
    """
    verdict = Verdict()
    workers = [_start(emulator.base_url, journal_url, f"w{i}", backend, lease) for i in range(3)]
    try:
        ids: list[dict[str, str]] = []
        for process in workers:
            mine: dict[str, str] = {}
            for _ in range(2):
                ready, key, response_id = await _line(process)
                assert ready == "READY", (ready, key, response_id)
                mine[key] = response_id
            ids.append(mine)
        dead, owner, other = workers
        dead.kill()
        await anyio.to_thread.run_sync(dead.wait)
        journal = tether.open_journal(journal_url)
        try:
            await lease_ran_out(journal, ids[0].values())  # on the store's clock
        finally:
            journal.close()  # pyright: ignore[reportAttributeAccessIssue]
        async with emulator.async_client() as client:
            report = await tether.reap(client, journal_url, grace=5.0)
            cancelled = {e.response_id for e, _ in report.cancelled}
            if not set(ids[0].values()) <= cancelled:
                verdict.problems.append(f"the reap did not cancel the dead worker's: {report}")
            wait = 10.0 if jitter is None else jitter.choice([0.0, 10.0])
            request = await tether.request_cancel(journal_url, key="w1-a", client=client, wait=wait)
        if wait and [e.response_id for e in request.stopped] != [ids[1]["w1-a"]]:
            verdict.problems.append(f"request_cancel did not stop w1-a: {request}")
        if wait and await _line(owner) != ["ENDED", "w1-a", "cancel_requested"]:
            verdict.problems.append("w1-a did not end by the request")
        if jitter is not None:
            await anyio.sleep(jitter.uniform(0, 1.5))  # a random moment: the soak's reach
        for process in (owner, other):
            process.send_signal(signal.SIGINT)
        for name, process in (("w1", owner), ("w2", other)):
            if await _exited(process, EXIT_BOUND):
                if process.returncode != -signal.SIGINT:  # KeyboardInterrupt ends Python so
                    assert process.stderr is not None
                    stderr = process.stderr.read()
                    # asyncio before 3.11: SIGINT cancels anyio's main task, which ends with
                    # CancelledError (the stops ran: the responses are checked below)
                    cancelled = stderr.rstrip().endswith("asyncio.exceptions.CancelledError")
                    if _SIGINT_RAISES[backend] or process.returncode != 1 or not cancelled:
                        verdict.problems.append(
                            f"{name} exited with {process.returncode}, not by KeyboardInterrupt"
                        )
                        verdict.stacks.append(f"--- {name}\n{stderr}")
            else:
                verdict.problems.append(f"{name} did not exit {EXIT_BOUND}s after SIGINT")
                process.send_signal(signal.SIGUSR1)
                await anyio.sleep(0.5)  # let it write its stacks: diagnostics only
                process.kill()
                await anyio.to_thread.run_sync(process.wait)
                assert process.stderr is not None
                verdict.stacks.append(f"--- {name}\n{process.stderr.read()}")
        for mine in ids:
            for key, response_id in mine.items():
                record = emulator.ledger[response_id]
                if record.generating:
                    verdict.problems.append(f"{key} ({response_id}) still generating")
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    return verdict


def main() -> None:  # pragma: no cover - by hand
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="trio")
    parser.add_argument("--store", choices=["redis", "postgres"], default="redis")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="random SIGINT moments")
    args = parser.parse_args()
    from tests import fleet_servers
    from tests.conftest import TEST_MODELS

    servers = fleet_servers.redis_server if args.store == "redis" else fleet_servers.postgres_server
    failures = 0
    jitter = None if args.seed is None else random.Random(args.seed)
    with servers() as server, ResponsesEmulator(models=dict(TEST_MODELS), seed=1) as emulator:
        for number in range(args.trials):
            if args.store == "redis":
                fleet_servers.flush_redis(server)  # pyright: ignore[reportArgumentType]
            else:
                fleet_servers.drop_journal_tables(server)  # pyright: ignore[reportArgumentType]
            started = time.monotonic()
            verdict = anyio.run(trial, emulator, server.url, args.backend, args.lease, jitter)
            took = time.monotonic() - started
            print(f"trial {number}: {'ok' if verdict.ok else 'FAILED'} ({took:.1f}s)", flush=True)
            if not verdict.ok:
                failures += 1
                print("\n".join(verdict.problems + verdict.stacks), flush=True)
    print(f"{failures} of {args.trials} trials failed", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
