"""Argument checks shared by the public entry points: fail before any request is sent."""

from __future__ import annotations

import math

__all__ = ["check_positive", "check_timeout"]


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (bools refused), else ValueError/TypeError naming *name*."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float: 10**400
        finite = False
    if not finite or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_timeout(name: str, value: object) -> float | None:
    """``None`` (no timeout) or a finite number > 0."""
    return None if value is None else check_positive(name, value)
