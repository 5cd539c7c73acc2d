"""One helper for the public modules: their objects say which public module they belong to."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def claim(module: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` of the classes and functions in *names* (and of the records nested in
    a class, such as ``StreamEvent.Ended``) to *module*, the public module that exports them.

    Reprs, tracebacks and the API docs then show ``tether.races.RaceResult``, not the private
    module it is defined in.
    """
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type):
            obj.__module__ = module
            for nested in vars(obj).values():
                if isinstance(nested, type) and nested.__qualname__.startswith(
                    obj.__qualname__ + "."
                ):
                    nested.__module__ = module
        elif inspect.isfunction(obj):
            obj.__module__ = module
