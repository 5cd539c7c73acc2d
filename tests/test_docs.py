"""Every Python block of README.md and docs/*.md runs, on the emulator (pytest-examples).

How a block runs depends on what it is:

- A script runs as a module, with ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` pointing at a
  running emulator, so ``openai.AsyncOpenAI()`` in the block talks to it, and ``HOME`` in
  a fresh folder, so ``~/...`` paths do too. A script that
  calls ``anyio.run`` runs once per backend: ``anyio.run`` is made to use the test's
  backend whatever the block asks for.
- A block that defines ``test_...`` functions is a test file in a new project: the test
  blocks run in one pytest process of their own, in a folder that holds only them and the
  ``pyproject.toml`` and ``conftest.py`` blocks of ``docs/testing.md`` (what the docs tell
  a new project to add); every test in the block must pass, async ones on both backends.
- A block titled ``conftest.py`` is one of those project files (it runs with the tests).
- A block fenced ``{.python test="skip" reason="..."}`` is skipped, with its reason.

A ``print(...)`` followed by ``# prints: ...`` lines prints exactly those lines: the
comment is checked (pytest-examples' print check, for those prints only; its own ``#>``
marker would not survive ``ruff format``, which formats the docs' code too).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from pytest_examples import CodeExample, EvalExample, find_examples, run_code

from tether.testing import EmulatedModel, ResponsesEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [example for path in DOCS for example in find_examples(path)]
TESTING_MD = ROOT / "docs" / "testing.md"

PRINTS = "# prints: "
"""What the docs write after a print, where pytest-examples' print check writes ``#> ``."""
_TEST_FUNCTION = re.compile(r"^(async )?def test_", re.MULTILINE)
_TITLED = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```', re.MULTILINE | re.DOTALL)


def _kind(example: CodeExample) -> str:
    if example.prefix_settings().get("test") == "skip":
        return "skip"
    if example.prefix_settings().get("title") == "conftest.py":
        return "project file"
    if _TEST_FUNCTION.search(example.source):
        return "pytest"
    return "script"


def _id(example: CodeExample) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.start_line}"


def _cases() -> Iterator[Any]:
    for example in EXAMPLES:
        kind = _kind(example)
        if kind == "script" and "anyio.run(" in example.source:
            for backend in ("asyncio", "trio"):
                yield pytest.param(example, backend, id=f"{_id(example)}-{backend}")
        elif kind != "project file":
            yield pytest.param(example, None, id=_id(example))


@pytest.fixture(scope="module")
def docs_emulator() -> Iterator[ResponsesEmulator]:
    """The "OpenAI API" of the scripts: the emulator's default models, generating 4x faster
    (their time to first token, which decides races, unchanged): the docs' outputs stay
    the same, the suite spends less time waiting for text."""
    models = {
        name: attrs.evolve(model, tokens_per_s=model.tokens_per_s * 4)
        for name, model in EmulatedModel.defaults().items()
    }
    with ResponsesEmulator(models=models, seed=0) as emu:
        yield emu


@pytest.mark.parametrize(("example", "backend"), list(_cases()))
def test_docs_example(
    example: CodeExample,
    backend: str | None,
    eval_example: EvalExample,
    docs_emulator: ResponsesEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    kind = _kind(example)
    if kind == "skip":
        fence = example.path.read_text("utf-8").splitlines()[example.start_line - 1]
        reason = re.search(r'reason="([^"]+)"', fence)  # the prefix, before lower()
        assert reason, f'{_id(example)}: a skipped block says why: reason="..."'
        pytest.skip(reason.group(1))
    if kind == "pytest":
        _run_as_a_new_projects_tests(example, request.getfixturevalue("new_project_run"))
        return
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/..." in a block is the test's own folder
    monkeypatch.setenv("OPENAI_BASE_URL", docs_emulator.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-emulator")
    if backend is not None:
        run = anyio.run

        def run_on_the_tests_backend(func: Any, *args: Any, **_: Any) -> Any:
            return run(func, *args, backend=backend)

        monkeypatch.setattr(anyio, "run", run_on_the_tests_backend)
    assert run_code.comment_prefix == "#> ", "pytest-examples changed: see PRINTS"
    monkeypatch.setattr(run_code, "comment_prefix", PRINTS)
    monkeypatch.setattr(run_code, "comment_prefix_re", re.compile(f"^ *{re.escape(PRINTS)}", re.M))
    checked = _checked_print_lines(example)
    # pytest-examples finds each print's caller with inspect.stack(), which inspects every
    # frame on the stack (tens of milliseconds a print in a deep async stack): a block that
    # prints as it streams then read slower than the (4x faster) models generate, and its
    # `break` came after the response had completed. It only uses the first few frames.
    monkeypatch.setattr(inspect, "stack", _shallow_stack)
    eval_example.include_print = lambda file, frame, args: _is_checked(file, frame, checked)
    eval_example.run_print_check(example)
    assert docs_emulator.ledger.orphans() == [], f"{_id(example)} left responses generating"


def _shallow_stack(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()``'s first frames (the caller's first), without their source."""
    frames: list[inspect.FrameInfo] = []
    frame = sys._getframe(1)  # pyright: ignore[reportPrivateUsage]
    while frame is not None and len(frames) <= run_code.parent_frame_id:
        frames.append(inspect.FrameInfo(frame, *inspect.getframeinfo(frame, 0)))
        frame = frame.f_back
    return frames


def _checked_print_lines(example: CodeExample) -> set[int]:
    """The (1-based) lines of the prints followed by a ``# prints:`` comment."""
    lines = example.source.splitlines()
    return {
        number
        for number, (line, after) in enumerate(zip(lines, [*lines[1:], ""], strict=True), start=1)
        if "print(" in line and after.strip().startswith(PRINTS.strip())
    }


def _is_checked(file: Path, frame: inspect.FrameInfo, checked: set[int]) -> bool:
    return file.samefile(frame.filename) and frame.lineno in checked


def _project_files() -> dict[str, str]:
    """The set-up docs/testing.md tells a new project to add, by file name."""
    return {title: source for _, title, source in _TITLED.findall(TESTING_MD.read_text("utf-8"))}


def test_the_docs_give_a_new_project_its_pytest_set_up() -> None:
    """Without ``anyio_mode = "auto"`` a new project's async tests fail ("not natively
    supported"); without the backend fixture they run on asyncio only."""
    files = _project_files()
    assert 'anyio_mode = "auto"' in files["pyproject.toml"]
    assert '"trio"' in files["conftest.py"]


def _test_file(example: CodeExample) -> str:
    return f"test_{example.path.stem.replace('-', '_')}_{example.start_line}.py"


@pytest.fixture(scope="module")
def new_project_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test block, each its own file, in one new project: one pytest process (-rA)."""
    project = tmp_path_factory.mktemp("new_project")
    for name, source in _project_files().items():
        (project / name).write_text(source, "utf-8")
    for example in EXAMPLES:
        if _kind(example) == "pytest":
            (project / _test_file(example)).write_text(example.source, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PYTEST_"))}
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return process.stdout + process.stderr


def _run_as_a_new_projects_tests(example: CodeExample, output: str) -> None:
    name = re.escape(_test_file(example))
    assert re.search(rf"^PASSED {name}::", output, re.MULTILINE), output
    assert not re.search(rf"^(FAILED|ERROR|SKIPPED|XFAIL).*{name}", output, re.MULTILINE), output
    if "async def test_" in example.source:  # the docs' conftest.py: both backends
        assert re.search(rf"^PASSED {name}::\w+\[trio\]", output, re.MULTILINE), output
        assert re.search(rf"^PASSED {name}::\w+\[asyncio\]", output, re.MULTILINE), output
