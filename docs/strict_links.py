"""A mkdocs hook: a link to a page left out of the site fails ``mkdocs build --strict``.

mkdocs reports a link to an excluded file (``exclude_docs``: the benchmark tables, which
the Benchmarks page includes as snippets) at INFO whatever ``validation:`` says (it caps
that level at INFO), so ``--strict`` passed with three dead links. This raises those
reports to WARNING, which ``--strict`` counts (mkdocs.yml: ``hooks``).
"""

from __future__ import annotations

import logging
from typing import Any

_EXCLUDED = "which is excluded from the built site"


class _DeadLinksAreWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and _EXCLUDED in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_FILTER = _DeadLinksAreWarnings()


def on_startup(**kwargs: Any) -> None:
    """Install the filter once per build (``mkdocs serve`` rebuilds keep it)."""
    logger = logging.getLogger("mkdocs.structure.pages")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
