"""Shared fixtures: every async test runs on asyncio and trio; the emulator and its client
check at teardown that the test left no response generating and no connection checked out.

Helpers shared by test modules live in `tests.support`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from hypothesis import settings
from trio.testing import MockClock

from tests import fleet_servers
from tests.support import requests_in_flight
from tether._pytest_plugin import fail_if_left_generating
from tether.testing import EmulatedModel, Faults, ResponsesEmulator

# Property tests are deterministic (the same examples every run) and write nothing to disk.
settings.register_profile("tether", database=None, derandomize=True)
settings.load_profile("tether")


def pytest_configure(config: pytest.Config) -> None:
    _hear_ctrl_c()
    _forgive_late_sockets_on_python_3_10(config)


def _hear_ctrl_c() -> None:
    """Let the Ctrl-C tests press Ctrl-C, even in a run started with SIGINT ignored.

    A shell without job control (a script, a CI step) starts a background command
    (``pytest &``) with SIGINT ignored, and the xdist workers and every child process
    inherit that: a real SIGINT is then dropped and ``_thread.interrupt_main`` does nothing,
    so the tests that press Ctrl-C fail though tether is right. Python's own handler is put
    back in each test process (children then start with the default disposition); a handler
    the run was given on purpose is left alone.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _forgive_late_sockets_on_python_3_10(config: pytest.Config) -> None:
    """On Python 3.10 only: a loopback socket garbage-collected unclosed is not an error.

    Twice in about ten 3.10 runs (never on 3.11-3.13, never with a collection after each
    test to find it) a ``ResourceWarning: unclosed <socket.socket ... 127.0.0.1>`` surfaced
    in an unrelated emulator test: some earlier test's socket, collected late. Its source is
    not found yet (the note of round three says what was tried); until it is, that one
    warning, on that one Python, does not fail the suite. Every other warning still does.
    """
    if sys.version_info < (3, 11):
        config.addinivalue_line(
            "filterwarnings",
            "ignore:Exception ignored in. <socket.socket fd=:pytest.PytestUnraisableExceptionWarning",
        )


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Run each async test on asyncio and on trio.

    Tests marked ``virtual_time`` run on trio only, under an autojump ``MockClock``
    (never with real sockets busy: see the ``MockClock`` docstring).
    """
    if request.node.get_closest_marker("virtual_time"):
        if request.param == "asyncio":
            pytest.skip("virtual time needs trio's MockClock")
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return request.param


# --------------------------------------------------------------------- the emulator

SLOW = EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=2000)
"""Streams for about a minute: long enough that only tether stops it."""

TEST_MODELS = {
    "fast": EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=20),
    "slow": SLOW,
    "flaky-cancel": EmulatedModel(
        ttft=0.0, tokens_per_s=40.0, length=2000, faults=Faults(cancel_failures=2)
    ),
    "hanging-cancel": EmulatedModel(
        ttft=0.0, tokens_per_s=40.0, length=2000, faults=Faults(cancel_hangs=True)
    ),
    "dropping": EmulatedModel(
        ttft=0.0, tokens_per_s=2000.0, length=30, faults=Faults(drop_after=8)
    ),
    "silent": EmulatedModel(ttft=120.0, tokens_per_s=40.0, length=20),
    "trickle": EmulatedModel(ttft=0.0, tokens_per_s=0.05, length=5),
    "nested-error": EmulatedModel(
        ttft=0.0, tokens_per_s=2000.0, length=20, faults=Faults(error_event="nested", error_after=3)
    ),
    "flat-error": EmulatedModel(
        ttft=0.0, tokens_per_s=2000.0, length=20, faults=Faults(error_event="flat", error_after=3)
    ),
}


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[ResponsesEmulator]:
    """A fresh emulator with the test models above.

    At teardown (after the clients' teardown), the test fails if it left a response
    generating, once what was settling settled (a bounded wait on the ledger), unless it
    is marked ``@pytest.mark.leaves_responses_generating("why")``.
    """
    with ResponsesEmulator(models=dict(TEST_MODELS), seed=1) as emu:
        yield emu
        fail_if_left_generating(request, emu)


@pytest.fixture
async def client(emulator: ResponsesEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    """An ``AsyncOpenAI`` on the emulator; checks on exit that no connection is left checked out."""
    async with emulator.async_client() as c:
        yield c
        assert requests_in_flight(c) == 0, "a connection was left checked out of the pool"


# --------------------------------------------------------------------- fleet servers (journal)


def _server_or_skip(binary: str) -> None:
    """Skip when the server is not installed here; in CI (``CI`` set) that is a failure."""
    reason = fleet_servers.missing(binary)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the fleet tests", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[fleet_servers.RedisServer]:
    """A real ``redis-server`` on a free loopback port, for the whole session."""
    _server_or_skip("redis-server")
    with fleet_servers.redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[fleet_servers.PostgresServer]:
    """A real PostgreSQL cluster on a free loopback port, for the whole session."""
    _server_or_skip("postgres")
    with fleet_servers.postgres_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: fleet_servers.RedisServer) -> str:
    """The session's Redis, emptied (``FLUSHDB``) for this test."""
    fleet_servers.flush_redis(redis_server)
    return redis_server.url


@pytest.fixture
def postgres_url(postgres_server: fleet_servers.PostgresServer) -> str:
    """The session's PostgreSQL, without any journal table for this test."""
    fleet_servers.drop_journal_tables(postgres_server)
    return postgres_server.url
