"""tether's test suite: fixtures in ``conftest.py``, shared helpers in ``support.py``.

A package, so that test modules import shared code as ``from tests.support import ...``.
"""
