"""Check, on import, that the `tether[testing]` extra is installed; say how to get it if not.

`tether.testing` imports this module first, so that without starlette or uvicorn the
import fails with the `pip install` line to run instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib

__all__ = ["HINT", "require"]

HINT = 'pip install "tether[testing]"'
"""What to run to get the emulator's dependencies."""


def require(*modules: str, what: str = "tether.testing") -> None:
    """Import `modules`, or raise ImportError naming the missing one and `HINT`.

    Raises:
        ImportError: One of `modules` cannot be imported.

    Example:
        >>> require("starlette", "uvicorn")
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"{what} needs the emulator's dependencies ({exc.name or module} is missing): "
                f"{HINT}",
                name=exc.name,
            ) from exc


require("starlette", "uvicorn")
