"""Real Redis and PostgreSQL servers for the fleet tests, on a free loopback port in a temp dir.

``conftest.py`` turns these into session-scoped fixtures; ``benchmarks/bench_fleet.py`` uses
them directly. Each server is started with the binary this machine has (``redis-server``,
``postgres``), waited for by connecting to it (no sleeps), and stopped at the end.

When a binary is missing, the fixture skips, unless ``CI`` is set: then it fails, because CI
installs both (``.ci/run``) and a fleet suite that skipped itself would prove nothing.

PostgreSQL's ``initdb`` refuses to run as root: as root, the cluster is created and run as
the unprivileged user ``nobody`` (``runuser``), in a temp dir that user owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs

__all__ = [
    "PostgresServer",
    "RedisServer",
    "close_journal",
    "connections_to",
    "drop_journal_tables",
    "flush_redis",
    "frozen",
    "missing",
    "postgres_server",
    "redis_server",
]

_START_TIMEOUT = 30.0
_POSTGRES_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def connections_to(url: str) -> int:
    """How many TCP connections this process holds open to the server at *url* (Linux).

    Read from ``/proc``: the sockets among this process's file descriptors whose remote end
    is the URL's port. A socket closed is gone from both at once: nothing to wait for.
    """
    port = urlsplit(url).port
    assert port is not None, url
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while listing
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
    return count


def close_journal(journal: object) -> None:
    """Close a built-in journal's connections (a journal object is its owner's to close)."""
    from tether._journal_postgres import PostgresJournal
    from tether._journal_redis import RedisJournal
    from tether._journal_sqlite import SqliteJournal

    assert isinstance(journal, (SqliteJournal, RedisJournal, PostgresJournal)), journal
    journal.close()


def missing(binary: str) -> str | None:
    """Why a server cannot be started here (``None`` if it can)."""
    if _which(binary) is None:
        return f"{binary} is not installed (see .ci/run for the install)"
    return None


def _which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found is None and binary in ("postgres", "initdb", "pg_ctl"):
        for folder in _POSTGRES_DIRS:
            candidate = Path(folder) / binary
            if candidate.exists():
                return str(candidate)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # a poll of the port while the server starts: nothing to wait on
    raise RuntimeError(f"no server on port {port} after {_START_TIMEOUT}s: {log.read_text()}")


@attrs.define
class RedisServer:
    """A ``redis-server`` with an append-only file (so a restart keeps what was written)."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port and data), and wait until it accepts connections."""
        log = self.folder / "redis.log"
        binary = _which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_listening(self.port, self.process, log)

    def stop(self) -> None:
        """Stop it (SIGTERM: it flushes the append-only file first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=_START_TIMEOUT)
        self.process = None

    def restart_empty(self) -> None:
        """Restart it with nothing in it: a Redis without persistence, or a failover to an
        empty replica (the append-only file is deleted between the stop and the start)."""
        self.stop()
        shutil.rmtree(self.folder / "appendonlydir", ignore_errors=True)
        (self.folder / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def pids(self) -> list[int]:
        """The server's processes."""
        assert self.process is not None
        return [self.process.pid]


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis on a free port, stopped and deleted at the end."""
    with tempfile.TemporaryDirectory(prefix="tether-redis-") as folder:
        server = RedisServer(port=free_port(), folder=Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@attrs.define
class PostgresServer:
    """A throwaway PostgreSQL cluster (trust authentication, loopback only)."""

    port: int
    folder: Path
    user: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database ``postgres``."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def pids(self) -> list[int]:
        """The processes under the postmaster: every connection's backend (and the background
        workers). Frozen, every open connection stalls, as behind a pgbouncer that stalls. The
        postmaster is left running: ``runuser`` above it (as root) would see it stop and stop
        itself, and nothing would wake it."""
        assert self.process is not None
        # The first "postgres" from the top: the process itself, or runuser's one child.
        postmaster = next(pid for pid in _descendants(self.process.pid) if _name(pid) == "postgres")
        return _descendants(postmaster)[1:]


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def _descendants(root: int) -> list[int]:
    """*root* and every process under it (read from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")"
            pid, rest = stat.read_text().split(" ", 1)
            ppid = int(rest.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@contextlib.contextmanager
def frozen(server: RedisServer | PostgresServer, *, at_most: float = 30.0) -> Iterator[None]:
    """Freeze the server (SIGSTOP on every process of it) for the block: it still accepts
    connections (the kernel does) and answers nothing. Thawed (SIGCONT) at the block's end,
    or after *at_most* seconds whatever happens (code that waits for the server forever,
    such as the code before a fix, then fails instead of hanging the session)."""
    pids = server.pids()

    def thaw() -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    safety = threading.Timer(at_most, thaw)
    safety.daemon = True
    safety.start()
    try:
        yield
    finally:
        safety.cancel()
        thaw()


def _wait_until_accepting(
    server: PostgresServer, process: subprocess.Popen[bytes], log: Path
) -> None:
    import psycopg

    deadline = time.monotonic() + _START_TIMEOUT
    while True:  # listening is not ready: "the database system is starting up"
        try:
            psycopg.connect(server.url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()}") from None
            time.sleep(0.02)


def _as_user(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free port (run as ``nobody`` when we are root)."""
    run_as = "nobody" if os.geteuid() == 0 else None
    initdb, postgres = _which("initdb"), _which("postgres")
    assert initdb is not None
    assert postgres is not None
    with tempfile.TemporaryDirectory(prefix="tether-postgres-") as folder:
        root = Path(folder)
        data = root / "data"
        if run_as is not None:
            os.chmod(root, 0o777)  # the unprivileged user creates its cluster in here
        user = run_as or "postgres"
        subprocess.run(
            _as_user(run_as, [initdb, "-D", str(data), "-U", user, "-A", "trust", "--no-sync"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port = free_port()
        log = root / "postgres.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                _as_user(
                    run_as,
                    [
                        postgres,
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"unix_socket_directories={root}",
                        "-c",
                        "fsync=off",
                        "-c",
                        "max_connections=200",
                    ],
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_until_listening(port, process, log)
            server = PostgresServer(port=port, folder=root, user=user, process=process)
            _wait_until_accepting(server, process, log)
            yield server
        finally:
            process.terminate()  # SIGTERM: a "smart" shutdown once clients are gone
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.send_signal(2)  # SIGINT: "fast" shutdown, disconnects the clients
                process.wait(timeout=_START_TIMEOUT)


def flush_redis(server: RedisServer) -> None:
    """Empty the server's database 0."""
    import redis

    with redis.Redis.from_url(server.url) as client:
        client.flushdb()


def drop_journal_tables(server: PostgresServer) -> None:
    """Drop the journal's tables: the next test starts without a journal."""
    import psycopg

    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS tether_entries, tether_owners")
