"""Shared fixtures: every async test runs on asyncio and trio."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Run each async test on asyncio and on trio.

    Tests marked ``virtual_time`` run on trio only, under an autojump ``MockClock``
    (never with real sockets busy: see the ``MockClock`` docstring).
    """
    if request.node.get_closest_marker("virtual_time"):
        if request.param == "asyncio":
            pytest.skip("virtual time needs trio's MockClock")
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return request.param
