"""Without the `testing` extra: pytest still runs, and the emulator says how to install it.

A plain `pip install tether` has no starlette, uvicorn or hypercorn, yet registers the
`tether` pytest plugin in every pytest run of the environment. Each test runs a child
Python whose `sys.meta_path` refuses those modules (no venv to build, nothing uninstalled).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HINT = 'pip install "tether[testing]"'

BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = {"starlette", "uvicorn", "hypercorn", "h2"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_child(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_tether_testing_without_the_extra_raises_import_error_with_the_hint(
    tmp_path: Path,
) -> None:
    """`import tether.testing` fails with ImportError naming the missing module and the fix."""
    child = run_child(
        """
        import tether  # the core library needs no extra
        try:
            import tether.testing
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("imported")
        """,
        tmp_path,
    )
    assert child.returncode == 0, child.stderr
    assert "ImportError: tether.testing needs the emulator's dependencies" in child.stdout
    assert "starlette is missing" in child.stdout
    assert HINT in child.stdout


def test_http2_emulator_without_hypercorn_raises_import_error_with_the_hint(
    tmp_path: Path,
) -> None:
    """With starlette and uvicorn but no hypercorn: http2=True says what to install."""
    child = run_child(
        """
        BLOCKED.difference_update({"starlette", "uvicorn"})
        from tether.testing import ResponsesEmulator
        ResponsesEmulator()  # HTTP/1.1 needs nothing more
        try:
            ResponsesEmulator(http2=True)
        except ImportError as exc:
            print("ImportError:", exc)
        """,
        tmp_path,
    )
    assert child.returncode == 0, child.stderr
    assert "ResponsesEmulator(http2=True) needs the emulator's dependencies" in child.stdout
    assert HINT in child.stdout


def test_pytest_runs_without_the_extra_and_the_fixtures_say_how_to_install_it(
    tmp_path: Path,
) -> None:
    """The plugin loads; tests without the emulator pass; its fixtures error with the hint."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            def test_plain():
                assert True

            def test_http2_parameter(emulator_http2):
                assert emulator_http2 in (False, True)

            def test_uses_the_emulator(responses_emulator):
                raise AssertionError("unreachable without the extra")

            def test_uses_the_client(emulated_client):
                raise AssertionError("unreachable without the extra")
            """
        )
    )
    child = run_child(
        """
        import pytest
        code = pytest.main(["-q", "-p", "no:cacheprovider", "test_user.py"])
        sys.exit(int(code))
        """,
        tmp_path,
    )
    out = child.stdout
    assert child.returncode == 1, out + child.stderr  # tests failed, pytest itself ran
    assert "3 passed, 2 errors" in out, out
    assert out.count(HINT) >= 2, out
    assert "starlette is missing" in out
