"""pytest fixtures for the Responses emulator (registered as the `tether` plugin).

Installing tether registers this module as a pytest plugin (entry point `pytest11`),
so these fixtures are available in every test without an import:

- `responses_emulator`: a started `ResponsesEmulator` with `default_models()`, one per test;
- `responses_emulator_h2`: the same, served over HTTP/2 (h2c) as well, its clients on HTTP/2;
- `emulated_client`: an `openai.OpenAI` client on `responses_emulator`;
- `emulated_async_client`: an `openai.AsyncOpenAI` client on it (asyncio or trio);
- `emulator_http2`: `False`, then `True`: request it to run a test over HTTP/1.1 and over
  HTTP/2, and pass it on as `ResponsesEmulator(http2=emulator_http2)`.

It lives outside `tether.testing` and imports the emulator lazily, so it loads in every
pytest run even without the `tether[testing]` extra (starlette, uvicorn, hypercorn); only
the fixtures need it, and without it they fail with the `pip install` line to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tether.testing import ResponsesEmulator

__all__ = [
    "emulated_async_client",
    "emulated_client",
    "emulator_http2",
    "responses_emulator",
    "responses_emulator_h2",
]


def _emulator_class() -> type[ResponsesEmulator]:
    from tether.testing import ResponsesEmulator  # ImportError with the install hint

    return ResponsesEmulator


@pytest.fixture(params=[pytest.param(False, id="http1"), pytest.param(True, id="http2")])
def emulator_http2(request: pytest.FixtureRequest) -> bool:
    """`False` (HTTP/1.1, uvicorn), then `True` (HTTP/2 h2c, hypercorn): one run of the test each.

    Request it in a test, or in a fixture that builds an emulator, to run the test over
    both protocols; the emulator's `client()` and `async_client()` then speak its protocol.

    Example:
        >>> @pytest.fixture  # doctest: +SKIP
        ... def emulator(emulator_http2):
        ...     with ResponsesEmulator(models=MODELS, http2=emulator_http2) as emu:
        ...         yield emu
    """
    return bool(request.param)


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
    with _emulator_class()() as emulator:
        yield emulator


@pytest.fixture
def responses_emulator_h2() -> Iterator[ResponsesEmulator]:
    """A started Responses emulator serving HTTP/2 (h2c, hypercorn), with `default_models()`.

    Its `client()` and `async_client()` speak HTTP/2 with prior knowledge.

    Example:
        >>> def test_h2(responses_emulator_h2):  # doctest: +SKIP
        ...     with responses_emulator_h2.client() as client:
        ...         raw = client.responses.with_raw_response.create(model="gpt-5-nano", input="Hi")
        ...     assert raw.http_response.http_version == "HTTP/2"
    """
    with _emulator_class()(http2=True) as emulator:
        yield emulator


@pytest.fixture
def emulated_client(responses_emulator: ResponsesEmulator) -> Iterator[Any]:
    """An `openai.OpenAI` client on `responses_emulator` (no retries), closed afterwards.

    Example:
        >>> def test_create(emulated_client):  # doctest: +SKIP
        ...     response = emulated_client.responses.create(model="gpt-5-nano", input="Hi")
        ...     assert response.status == "completed"
    """
    client: Any = responses_emulator.client(max_retries=0)
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
    client: Any = responses_emulator.async_client(max_retries=0)
    async with client:
        yield client
