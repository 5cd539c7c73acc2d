"""pytest fixtures for the Responses emulator (registered as the `tether` plugin).

Installing tether registers this module as a pytest plugin (entry point `pytest11`),
so these fixtures are available in every test without an import:

- `responses_emulator`: a started `ResponsesEmulator` with `default_models()`, one per test;
- `emulated_client`: an `openai.OpenAI` client on it;
- `emulated_async_client`: an `openai.AsyncOpenAI` client on it (asyncio or trio).

The emulator is imported lazily, so the plugin loads even without the
`tether[testing]` extra (starlette, uvicorn); only the fixtures need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tether.testing import ResponsesEmulator

__all__ = ["emulated_async_client", "emulated_client", "responses_emulator"]


@pytest.fixture
def responses_emulator() -> Iterator[ResponsesEmulator]:
    """A started Responses emulator with `default_models()`, stopped after the test.

    Add models with `responses_emulator.models["name"] = Model(...)`, check its
    `ledger`, and wait on it with `await responses_emulator.wait_for(...)`.

    Example:
        >>> def test_no_orphans(responses_emulator):  # doctest: +SKIP
        ...     client = responses_emulator.client()
        ...     client.responses.create(model="gpt-5-nano", input="Hi")
        ...     assert not responses_emulator.ledger.orphans()
    """
    from tether.testing import ResponsesEmulator

    with ResponsesEmulator() as emulator:
        yield emulator


@pytest.fixture
def emulated_client(responses_emulator: ResponsesEmulator) -> Iterator[Any]:
    """An `openai.OpenAI` client on `responses_emulator` (no retries), closed afterwards.

    Example:
        >>> def test_create(emulated_client):  # doctest: +SKIP
        ...     response = emulated_client.responses.create(model="gpt-5-nano", input="Hi")
        ...     assert response.status == "completed"
    """
    client = responses_emulator.client(max_retries=0)
    with client:
        yield client


@pytest.fixture
async def emulated_async_client(responses_emulator: ResponsesEmulator) -> Any:
    """An `openai.AsyncOpenAI` client on `responses_emulator` (no retries), closed afterwards.

    An async fixture: it needs the anyio pytest plugin (it runs on the test's backend).

    Example:
        >>> async def test_create(emulated_async_client):  # doctest: +SKIP
        ...     response = await emulated_async_client.responses.create(
        ...         model="gpt-5-nano", input="Hi"
        ...     )
        ...     assert response.status == "completed"
    """
    client = responses_emulator.async_client(max_retries=0)
    async with client:
        yield client
