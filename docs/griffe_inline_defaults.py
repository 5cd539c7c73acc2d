"""A griffe extension for the API reference: show a default's value, not its constant's name.

``grace: float = DEFAULT_GRACE`` reads better as ``grace: float = 5.0`` in a signature: when
a parameter's default is a bare name bound at module level to a literal, the signature shows
the literal (mkdocs.yml: the mkdocstrings python handler's ``extensions``).
"""

from __future__ import annotations

from typing import Any

import griffe


class InlineConstantDefaults(griffe.Extension):
    """Replace ``DEFAULT_X`` defaults by the value of ``DEFAULT_X``."""

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        for parameter in func.parameters:
            default = parameter.default
            if not isinstance(default, griffe.ExprName):
                continue
            constant = func.module.members.get(default.name)
            if isinstance(constant, griffe.Alias):
                constant = constant.final_target
            if isinstance(constant, griffe.Attribute) and constant.value is not None:
                parameter.default = constant.value
