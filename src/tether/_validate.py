"""Argument checks shared by the public entry points: fail before any request is sent.

Each raises ``TypeError`` (the wrong type) or ``ValueError`` (the right type, a value out
of range) with a message that names the argument and shows the value. Numbers refuse
bools, nan, the infinities and ints too large for a float (``10**400``: ``math.isfinite``
itself would raise ``OverflowError`` on them). ``tests/test_validation.py`` checks every
public parameter against them, by property over the signatures.
"""

from __future__ import annotations

import math

__all__ = [
    "check_bool",
    "check_count",
    "check_non_negative",
    "check_number",
    "check_positive",
    "check_str",
    "check_timeout",
    "is_finite",
]


def is_finite(value: float) -> bool:
    """``math.isfinite``, but ``False`` for an int too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: 10**400
        return False


def check_number(name: str, value: object, *, what: str = "a number of seconds") -> float:
    """A finite int or float (bools refused), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if not is_finite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """A finite number > 0 (bools refused), else ValueError/TypeError naming *name*."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not is_finite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: object, *, what: str = "a number of seconds") -> float:
    """A finite number >= 0 (bools refused), else ValueError/TypeError naming *name*."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if not is_finite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_timeout(name: str, value: object) -> float | None:
    """``None`` (no timeout) or a finite number > 0."""
    return None if value is None else check_positive(name, value)


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False``: not a truthy string (``"no"`` is true) nor ``0``/``1``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_str(name: str, value: object, *, optional: bool = False) -> str | None:
    """A non-empty ``str`` (or ``None`` when *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        expected = "a str or None" if optional else "a str"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


def check_count(name: str, value: object, *, optional: bool = False) -> int | None:
    """An int >= 1 (bools refused; ``None`` too if *optional*), else TypeError/ValueError
    naming *name*."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value
