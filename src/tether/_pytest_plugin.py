"""pytest fixtures for the Responses emulator (registered as the `tether` plugin).

Installing tether registers this module as a pytest plugin (entry point `pytest11`),
so these fixtures are available in every test without an import:

- `responses_emulator`: a started `ResponsesEmulator` with `EmulatedModel.defaults()`, one per test;
- `responses_emulator_h2`: the same, served over HTTP/2 (h2c) as well, its clients on HTTP/2;
- `emulated_client`: an `openai.OpenAI` client on `responses_emulator`;
- `emulated_async_client`: an `openai.AsyncOpenAI` client on it (asyncio or trio);
- `emulator_http2`: `False`, then `True`: request it to run a test over HTTP/1.1 and over
  HTTP/2, and pass it on as `ResponsesEmulator(http2=emulator_http2)`.

With `tether_fail_if_left_generating = true` in the pytest configuration, a test whose
`responses_emulator` (or `responses_emulator_h2`) still generates a response once the
test is done fails at teardown, unless it is marked
`@pytest.mark.leaves_responses_generating("why")`; see `fail_if_left_generating`.

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
    from tether.testing._ledger import Ledger

__all__ = [
    "emulated_async_client",
    "emulated_client",
    "emulator_http2",
    "fail_if_left_generating",
    "responses_emulator",
    "responses_emulator_h2",
]

MARKER = "leaves_responses_generating"
"""The marker of a test that leaves responses generating on purpose (its argument says why)."""

CHECK_OPTION = "tether_fail_if_left_generating"
"""The ini option that turns the check on for the plugin's emulator fixtures."""

SETTLE_TIMEOUT = 10.0
"""Seconds the check waits at most for what is still settling on the server."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        CHECK_OPTION,
        type="bool",
        default=False,
        help="fail a test whose responses_emulator still generates a response once it is done",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(reason): the test leaves responses generating on the emulator on purpose "
        "(tether's emulator fixtures do not fail it for that)",
    )


def _check_on(config: pytest.Config) -> bool:
    try:
        return bool(config.getini(CHECK_OPTION))
    except ValueError:  # this module's hooks did not run (`-p no:tether`, fixtures imported)
        return False


def _settling(record: Ledger.Record) -> bool:
    """Whether a generating response is about to stop by itself.

    A client still connected is about to see its connection closed (the test is over);
    a non-background response stops when its last client goes; one whose cancel was
    answered `cancelled` is finishing a best-effort tail
    (`Faults(cancel_best_effort=...)`).
    """
    return record.generating and (
        record.listeners > 0 or not record.background or record.cancel_reported_status is not None
    )


def _settled(ledger: Ledger) -> bool:
    return ledger.cancels_in_flight == 0 and not any(_settling(r) for r in ledger)


def _describe(record: Ledger.Record) -> str:
    kind = "background" if record.background else "foreground"
    return (
        f"{record.id} (model {record.model!r}, {record.status}, {kind}, "
        f"{record.tokens_generated} tokens, {record.listeners} listeners, "
        f"{record.cancel_calls} cancel calls)"
    )


def fail_if_left_generating(
    request: pytest.FixtureRequest,
    emulator: ResponsesEmulator,
    *,
    timeout: float = SETTLE_TIMEOUT,
) -> None:
    """Fail the test if *emulator* still generates a response now that the test is done.

    A response left generating (`queued` or `in_progress`) is compute the caller pays
    for and never reads: what tether exists to prevent. Call this at the teardown of an
    emulator fixture, after the clients are closed. It first waits, at most *timeout*
    seconds and without polling (`ResponsesEmulator.wait_for_sync`), for what is still
    settling: cancel requests the server has not answered yet, responses whose clients
    are still disconnecting, best-effort cancels finishing their tail. Then any response
    still generating fails the test, listed.

    A test marked `@pytest.mark.leaves_responses_generating("why")` is not checked; the
    marker needs its reason.

    Args:
        request: The fixture's request (for the test's markers).
        emulator: The running emulator of the test.
        timeout: Seconds to wait at most for what is settling.

    Raises:
        pytest.fail.Exception: A response is still generating, or the marker has no reason.

    Example:
        >>> @pytest.fixture  # doctest: +SKIP
        ... def emulator(request):
        ...     with ResponsesEmulator(models=MODELS) as emu:
        ...         yield emu
        ...         fail_if_left_generating(request, emu)
    """
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            pytest.fail(
                f'@pytest.mark.{MARKER}("...") says why the test leaves responses generating, '
                f"got args={marker.args!r} kwargs={marker.kwargs!r}",
                pytrace=False,
            )
        return
    ledger = emulator.ledger
    try:
        emulator.wait_for_sync(_settled, timeout=timeout)
    except TimeoutError:
        waited = f" (after {timeout!r} s for cancels in flight and closing streams to settle)"
    else:
        waited = ""
    left = [r for r in ledger if r.generating]
    if left:
        lines = [_describe(r) for r in left]
        if ledger.cancels_in_flight:
            lines.append(f"and {ledger.cancels_in_flight} cancel requests not answered yet")
        pytest.fail(
            f"the test left responses generating on the emulator: {len(left)}{waited}\n  "
            + "\n  ".join(lines)
            + f'\nStop them, or mark the test @pytest.mark.{MARKER}("why").',
            pytrace=False,
        )


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
def responses_emulator(request: pytest.FixtureRequest) -> Iterator[ResponsesEmulator]:
    """A started Responses emulator with `EmulatedModel.defaults()`, stopped after the test.

    Add models with `responses_emulator.models["name"] = EmulatedModel(...)`, check its
    `ledger`, and wait on it with `await responses_emulator.wait_for(...)`. With
    `tether_fail_if_left_generating = true`, the test fails if it left a response
    generating (see `fail_if_left_generating`).

    Example:
        >>> def test_no_orphans(responses_emulator):  # doctest: +SKIP
        ...     client = responses_emulator.client()
        ...     client.responses.create(model="gpt-5-nano", input="Hi")
        ...     assert not responses_emulator.ledger.orphans()
    """
    with _emulator_class()() as emulator:
        yield emulator
        if _check_on(request.config):
            fail_if_left_generating(request, emulator)


@pytest.fixture
def responses_emulator_h2(request: pytest.FixtureRequest) -> Iterator[ResponsesEmulator]:
    """A started Responses emulator serving HTTP/2 (h2c, hypercorn), with `EmulatedModel.defaults()`.

    Its `client()` and `async_client()` speak HTTP/2 with prior knowledge; the same
    check as `responses_emulator`'s at teardown.

    Example:
        >>> def test_h2(responses_emulator_h2):  # doctest: +SKIP
        ...     with responses_emulator_h2.client() as client:
        ...         raw = client.responses.with_raw_response.create(model="gpt-5-nano", input="Hi")
        ...     assert raw.http_response.http_version == "HTTP/2"
    """
    with _emulator_class()(http2=True) as emulator:
        yield emulator
        if _check_on(request.config):
            fail_if_left_generating(request, emulator)


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
