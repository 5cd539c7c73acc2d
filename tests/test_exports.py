"""The public API is exactly what ``__all__`` says (httpx ``tests/test_exported_members.py``)."""

from __future__ import annotations

import inspect

import pytest

import tether
import tether.testing


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in dir(tether) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(tether, name))}
    public -= {"annotations", "inspect"}  # the imports of __init__ itself
    assert sorted(tether.__all__) == tether.__all__
    assert set(tether.__all__) == public - modules


def test_public_classes_and_functions_say_they_belong_to_tether() -> None:
    """Reprs and tracebacks show ``tether.StreamOutcome``, not ``tether._outcome.Outcome``."""
    for name in tether.__all__:
        member = getattr(tether, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__ == "tether", name


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    for name in tether.__all__:
        member = getattr(tether, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            doc = inspect.getdoc(member) or ""
            assert "Example" in doc, name


def test_testing_all_is_sorted() -> None:
    assert sorted(tether.testing.__all__) == tether.testing.__all__


def test_every_public_record_is_final() -> None:
    """Records are not for subclassing (trio's ``test_exports``): attrs classes carry @final."""
    import sys

    import attrs

    if sys.version_info < (3, 11):
        pytest.skip("typing.final records __final__ from Python 3.11")

    import tether.agents
    import tether.journal
    import tether.races

    for module in (tether, tether.races, tether.agents, tether.journal):
        for name in module.__all__:
            member = getattr(module, name)
            if inspect.isclass(member) and attrs.has(member):
                assert getattr(member, "__final__", False), f"{module.__name__}.{name}"
