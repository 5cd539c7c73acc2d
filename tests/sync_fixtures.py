"""The fixtures every ``tether.sync`` test module shares (test_sync, test_sync_scope and
test_sync_raised): each binds them by name, as module attributes, so that they apply to
that module's tests only (``portal_backend`` is autouse)::

    portal_backend = sync_fixtures.portal_backend
    client = sync_fixtures.client
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tether import _sync_portal

if TYPE_CHECKING:
    from collections.abc import Iterator

    import openai

    from tether.testing import ResponsesEmulator


@pytest.fixture(autouse=True, params=["asyncio", "trio"])
def portal_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the portal on asyncio and on trio."""
    monkeypatch.setattr(_sync_portal, "BACKEND", request.param)
    return request.param


@pytest.fixture
def client(emulator: ResponsesEmulator) -> Iterator[openai.OpenAI]:
    """A sync client of the test's emulator."""
    with emulator.client() as sync_client:
        yield sync_client
