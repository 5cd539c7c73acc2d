"""docs/design.md stays true: every module, test, class and function name it cites exists.

The page is for the people who carry tether on; a name that no longer exists there sends
them looking for code that is gone. Checked: file names (``_protocol.py``, ``tests/x.py``,
globs such as ``_sync_*.py``), tests (``tests/x.py::test_y``), dotted names into tether's
modules (``_compat.lean_target``, ``tether.observe``) and private names (``_forget``,
``_hot``), which must be defined somewhere in ``src/tether``.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tether"
DESIGN = ROOT / "docs" / "design.md"
_SPAN = re.compile(r"`([^`\n]+)`")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FOREIGN = frozenset(
    {
        "_assign_requests_to_connections",  # httpcore's pool (Where the fan-out's limit is)
        "_make_status_error_from_response",  # the openai SDK's (The lean stop path)
    }
)
"""Private names of other libraries that the page cites as theirs."""


def spans(text: str) -> list[str]:
    """The code spans of *text*, outside fenced blocks (diagrams are checked as text too)."""
    found = _SPAN.findall(re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    return sorted(set(found))


def cited_files(text: str) -> list[str]:
    files = {s for s in spans(text) if re.fullmatch(r"[\w./*-]+\.py", s)}
    # the architecture diagram names modules too ("_protocol.py<br/>...")
    files |= set(re.findall(r'["\s,(]([\w*]+\.py)\b', text))
    return sorted(files)


def file_exists(name: str) -> bool:
    bases = (ROOT, SRC, SRC / "testing", ROOT / "tests", ROOT / "benchmarks")
    return any(any(base.glob(name)) for base in bases)


@cache
def defined_names() -> frozenset[str]:
    """Every name defined in src/tether: functions, classes, attributes, slots, globals."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _NAME.match(node.value)
            ):
                names.add(node.value)  # __slots__ entries, __all__
    return frozenset(names)


def test_every_file_design_md_cites_exists() -> None:
    missing = [name for name in cited_files(DESIGN.read_text()) if not file_exists(name)]
    assert missing == []


def test_every_test_design_md_cites_exists() -> None:
    missing: list[str] = []
    for span in spans(DESIGN.read_text()):
        match = re.fullmatch(r"(tests/[\w/]+\.py)::(\w+)", span)
        if match is None:
            continue
        path, test = ROOT / match[1], match[2]
        if not path.exists() or not re.search(rf"def {test}\b", path.read_text()):
            missing.append(span)
    assert missing == []


def resolves(dotted: str) -> bool:
    """A module (tether.otel), a name in one (_compat.lean_target), or a record nested in a
    class (tether.observe.StreamEvent.Ended)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def test_every_dotted_name_into_tether_design_md_cites_exists() -> None:
    missing: list[str] = []
    for span in spans(DESIGN.read_text()):
        match = re.fullmatch(r"(tether(?:\.\w+)*|_\w+|observe|journal)\.(\w+)", span)
        if match is None or span.endswith(".py"):
            continue
        module, name = match[1], match[2]
        module = module if module.startswith("tether") else f"tether.{module}"
        found = resolves(f"{module}.{name}")
        if not found and name not in defined_names():
            missing.append(span)
    assert missing == []


def test_every_private_name_design_md_cites_is_defined_in_tether() -> None:
    text = DESIGN.read_text()
    private = [
        s.removesuffix("()")
        for s in spans(text)
        if _NAME.match(s.removesuffix("()")) and s.startswith("_") and not s.startswith("__")
    ]
    for label in re.findall(r'\|"?([^|"]*)"?\|', text):  # the diagram's arrow labels
        private += re.findall(r"(?<![\w.])_[A-Za-z]\w*(?![\w*])", label)  # not a glob
    modules = {path.stem for path in SRC.rglob("*.py")}
    modules |= {path.parent.name for path in SRC.rglob("__init__.py")}  # packages
    known = defined_names() | FOREIGN | modules
    missing = sorted({name for name in private if name not in known})
    assert missing == []


@pytest.mark.parametrize("stale", ["_hedge.py", "_Race", "aclose_sdk_stream"])
def test_the_names_that_went_stale_are_caught(stale: str) -> None:
    """The checks above catch the names design.md used to cite after they were gone."""
    if stale.endswith(".py"):
        assert not file_exists(stale)
    else:
        assert stale not in defined_names()
