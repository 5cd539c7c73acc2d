"""The check that a test left no response generating: the ``emulator`` fixture of this suite,
and the ``tether`` pytest plugin's ``responses_emulator`` when a project turns it on.

Each project below is a folder of test files run by a pytest process of its own, once
for the module; each test of this module reads one test's outcome from its report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER_TESTS = """
import threading

import pytest

from tether.testing import Faults, EmulatedModel


SLOW = EmulatedModel(ttft=0.0, tokens_per_s=40.0, length=10_000)


def test_left_generating(responses_emulator):
    responses_emulator.models["slow"] = SLOW
    with responses_emulator.client() as client:
        client.responses.create(model="slow", input="x", background=True)


def test_stopped(responses_emulator):
    responses_emulator.models["slow"] = SLOW
    with responses_emulator.client() as client:
        response = client.responses.create(model="slow", input="x", background=True)
        client.responses.cancel(response.id)


@pytest.mark.leaves_responses_generating("the raw SDK's baseline: nobody cancels")
def test_marked(responses_emulator):
    responses_emulator.models["slow"] = SLOW
    with responses_emulator.client() as client:
        client.responses.create(model="slow", input="x", background=True)


@pytest.mark.leaves_responses_generating
def test_marked_without_a_reason(responses_emulator):
    pass


def test_left_a_stream_whose_client_is_closing(responses_emulator):
    responses_emulator.models["slow"] = SLOW
    client = responses_emulator.client()
    stream = client.responses.create(model="slow", input="x", stream=True)
    next(iter(stream))
    client.close()  # the server sees the disconnect later, and stops the response then


def test_left_a_cancel_in_flight(responses_emulator):
    emu = responses_emulator
    emu.models["slow-cancel"] = EmulatedModel(
        ttft=0.0, tokens_per_s=40.0, length=10_000, faults=Faults(cancel_delay=0.5)
    )
    client = emu.client()
    response = client.responses.create(model="slow-cancel", input="x", background=True)
    threading.Thread(target=client.responses.cancel, args=(response.id,), daemon=True).start()
    emu.wait_for_sync(lambda ledger: ledger.cancels_in_flight == 1)
"""
"""A user's tests on the plugin's ``responses_emulator``."""

SUITE_TESTS = """
import pytest


def test_suite_left_generating(emulator):
    with emulator.client() as client:
        client.responses.create(model="slow", input="x", background=True)


@pytest.mark.leaves_responses_generating("a test about orphans")
def test_suite_marked(emulator):
    with emulator.client() as client:
        client.responses.create(model="slow", input="x", background=True)
"""
"""Tests of this suite, on its own ``emulator`` fixture (``tests/conftest.py``)."""


def run_project(folder: Path, files: dict[str, str]) -> str:
    """Write *files* in *folder*, run pytest there (``-rA``), and return its report."""
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # `tests`
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--strict-markers"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return process.stdout + process.stderr


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user's project that turns the check on, with tests on this suite's ``emulator``
    fixture (imported from ``tests/conftest.py``) beside them."""
    files = {
        "pytest.ini": "[pytest]\ntether_fail_if_left_generating = true\n",
        "conftest.py": "from tests.conftest import emulator  # noqa: F401\n",
        "test_user.py": USER_TESTS,
        "test_suite.py": SUITE_TESTS,
    }
    return run_project(tmp_path_factory.mktemp("checked"), files)


@pytest.fixture(scope="module")
def unchecked(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same user's tests without the option (the default)."""
    files = {"pytest.ini": "[pytest]\n", "test_user.py": USER_TESTS}
    return run_project(tmp_path_factory.mktemp("unchecked"), files)


def passed(report: str, test: str) -> bool:
    """Whether *test* (``file.py::name``) passed, teardown included."""
    return (
        re.search(rf"^PASSED {re.escape(test)}$", report, re.MULTILINE) is not None
        and re.search(rf"^ERROR {re.escape(test)} ", report, re.MULTILINE) is None
    )


def failed_at_teardown(report: str, test: str) -> str:
    """The teardown error of *test* (``file.py::name``) in *report*, or fail."""
    name = test.split("::")[1]
    for section in re.split(r"^_+ (?=ERROR at teardown of )", report, flags=re.MULTILINE):
        if section.startswith(f"ERROR at teardown of {name} "):
            assert re.search(rf"^ERROR {re.escape(test)} ", report, re.MULTILINE), report
            return section
    raise AssertionError(f"no teardown error for {test}:\n{report}")


def test_the_suites_emulator_fixture_fails_a_test_that_left_a_response_generating(
    checked: str,
) -> None:
    error = failed_at_teardown(checked, "test_suite.py::test_suite_left_generating")
    assert "the test left responses generating on the emulator: 1" in error
    assert "model 'slow', in_progress, background" in error
    assert '@pytest.mark.leaves_responses_generating("why")' in error


def test_the_suites_emulator_fixture_passes_a_test_marked_with_its_reason(checked: str) -> None:
    assert passed(checked, "test_suite.py::test_suite_marked"), checked


def test_the_check_fails_a_users_test_that_left_a_response_generating(checked: str) -> None:
    error = failed_at_teardown(checked, "test_user.py::test_left_generating")
    assert "the test left responses generating on the emulator: 1" in error
    assert "model 'slow', in_progress, background" in error


def test_the_check_passes_a_users_test_that_cancelled_its_response(checked: str) -> None:
    assert passed(checked, "test_user.py::test_stopped"), checked


def test_the_marker_is_registered_by_the_plugin_and_exempts_a_test(checked: str) -> None:
    """The project runs with ``--strict-markers`` and registers no marker of its own."""
    assert passed(checked, "test_user.py::test_marked"), checked


def test_the_marker_without_a_reason_fails_the_test(checked: str) -> None:
    error = failed_at_teardown(checked, "test_user.py::test_marked_without_a_reason")
    assert "says why the test leaves responses generating" in error


def test_the_check_passes_a_test_that_closed_its_client_mid_stream(checked: str) -> None:
    """A non-background response stops when its client goes: it is not left generating."""
    assert passed(checked, "test_user.py::test_left_a_stream_whose_client_is_closing"), checked


def test_the_check_waits_for_a_cancel_in_flight(checked: str) -> None:
    """The test ends while its cancel is still on the server (``cancel_delay=0.5``)."""
    assert passed(checked, "test_user.py::test_left_a_cancel_in_flight"), checked


def test_without_the_option_a_users_test_may_leave_responses_generating(unchecked: str) -> None:
    """The check is opt-in: turning it on by default would fail existing users' tests."""
    assert passed(unchecked, "test_user.py::test_left_generating"), unchecked
    assert passed(unchecked, "test_user.py::test_stopped"), unchecked
