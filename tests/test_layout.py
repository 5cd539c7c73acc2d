"""The source stays in modules a person can hold in their head (issue 25, docs/design.md).

Every module of ``src/tether`` has one concern and at most ``MAX_LINES`` lines; one that
must stay longer says why in its docstring (the words ``REASON``: "longer than 400 lines").
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"
MAX_LINES = 400
REASON = f"longer than {MAX_LINES} lines"
"""What the docstring of a module that must stay longer says, with why."""


def test_every_module_is_at_most_400_lines_or_its_docstring_says_why() -> None:
    too_long: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and REASON not in doc:
            too_long[str(path.relative_to(SRC))] = lines
    assert too_long == {}
