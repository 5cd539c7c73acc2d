"""Every public argument is checked before anything is sent, by property over the signatures.

The public callables are found by introspection (the ``__all__`` of ``tether``,
``tether.sync``, ``tether.journal``, ``tether.observe`` and ``tether.otel``); each parameter's
annotation says what it accepts, and hypothesis draws what it does not: wrong types, ints
too large for a float, nan and infinities, negative numbers. Each call must raise
``TypeError`` or ``ValueError`` naming the argument and showing the value, and no request
may reach the emulator's ledger. A new public function or parameter is covered without a
line here, unless its annotation is one this file does not know (then
``test_every_public_parameter_is_known`` fails and says which).
"""

from __future__ import annotations

import inspect
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tether
import tether.journal
import tether.observe
import tether.otel
import tether.sync
from tether import _sync_portal
from tether.testing import EmulatedModel, ResponsesEmulator

WATCHDOG = 10.0
"""Seconds a call may take: a bad argument that slipped through may start real work."""

# --------------------------------------------------------------------- what is public

MODULES = (tether, tether.journal, tether.observe, tether.otel, tether.sync)


def public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public function, and every public class that is not a record or a protocol."""
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or (isinstance(obj, type) and name in CONSTRUCTORS):
                yield f"{module.__name__}.{name}", obj


CONSTRUCTORS = {"OtelObserver"}
"""The public classes you construct yourself (the others are made by tether's functions,
or are records)."""


def _parts(annotation: object) -> frozenset[str]:
    """``"float | None"`` -> ``{"float", "None"}`` (annotations are strings here); a ``|``
    inside brackets is not split."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in str(annotation):
        depth += (char == "[") - (char == "]")
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return frozenset(part.strip() for part in parts)


ALIASES = {
    "Stagger": "float | AdaptiveStagger | None",
    "Win": "Callable[[Response], bool] | Literal[...]",
    "OnToolError": "Literal[...]",
    "float | Adaptive | None": "float | AdaptiveStagger | None",
}
"""Aliases spelled out, so that their parts say what they accept."""

SKIPPED = {"create_kwargs"}
"""Passed to the SDK as they are (``**create_kwargs``): the SDK's to check."""


def accepts(annotation: object) -> frozenset[str]:
    return _parts(ALIASES.get(str(annotation), str(annotation)))


# ------------------------------------------------------------------- what is not accepted

huge = st.sampled_from([10**400, -(10**400)])  # too large for a float
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
negative = st.one_of(
    st.integers(max_value=-1, min_value=-(10**6)),
    st.floats(max_value=-1e-9, min_value=-1e9, allow_nan=False),
)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
objects = st.sampled_from([object(), b"bytes", 1j, (1, 2), {"a": 1}])


def bad_values(annotation: object) -> st.SearchStrategy[Any]:
    """What a parameter annotated *annotation* must refuse."""
    parts = accepts(annotation)
    number = bool(parts & {"float", "int"})
    options: list[st.SearchStrategy[Any]] = [objects]
    if "None" not in parts:
        options.append(st.none())
    if "bool" not in parts:
        options.append(st.booleans())
    if number:
        options += [huge, not_finite, negative] if "float" in parts else [negative, st.just(0)]
        if "float" not in parts:  # an int
            options.append(st.sampled_from([1.5, math.nan, math.inf]))
    else:
        options += [st.integers(-5, 5), st.floats(allow_nan=True)]
    if "Literal[...]" in parts:
        options.append(word.map(lambda w: f"no-{w}"))  # no literal here starts with "no-"
    elif not parts & {"str", "os.PathLike[str]"}:
        options.append(word)
    if "bool" in parts and "str" not in parts:
        options.append(st.sampled_from(["no", "yes", "false"]))  # truthy strings
    return st.one_of(options)


KNOWN_PARTS = {
    "float",
    "int",
    "bool",
    "str",
    "None",
    "Literal[...]",
    "AdaptiveStagger",
    "Callable[[Response], bool]",
    "Scope",
    "AsyncOpenAI",
    "openai.OpenAI",
    "Sequence[Mapping[str, Any]]",
    "Sequence[AgentTool[..., Any] | Callable[..., Any]]",
    "ResponseInputParam",
    "DetachedResponse",
    "Journal",
    "os.PathLike[str]",
    "Callable[[Mapping[str, Any]], Bucket]",
    "Callable[P, R]",
    "Observer",
    "TracerProvider",
    "MeterProvider",
    "DefaultAsyncHttpxClient",
}
"""Every part of an annotation ``bad_values`` knows what to refuse for."""


# ------------------------------------------------------------------------ the calls


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[ResponsesEmulator]:
    """One emulator for the property tests (hypothesis reruns a test body, not its fixtures)."""
    models = {"fast": EmulatedModel(ttft=0.0, tokens_per_s=5000.0, length=5)}
    with ResponsesEmulator(models=models, seed=5) as emu:
        yield emu


@pytest.fixture(scope="module")
def module_clients(module_emulator: ResponsesEmulator) -> Iterator[tuple[Any, Any]]:
    """One async and one sync client for them: a new client an example costs its TLS
    context (tens of milliseconds), and nothing here may send a request (the ledger says)."""
    with module_emulator.client() as sync_client:
        yield module_emulator.async_client(), sync_client


@pytest.fixture(scope="module")
def journal_path() -> Iterator[str]:
    """A journal of its own, so that nothing here touches the per-user one."""
    with tempfile.TemporaryDirectory() as directory:
        yield os.path.join(directory, "journal.db")


def _tool_fn(x: int) -> int:
    """A tool."""
    return x


def valid_arguments(name: str, client: object, journal: str) -> dict[str, Any]:
    """A valid value for each argument a call of *name* may need besides the one tested."""
    return {
        "client": client,
        "scope": client,
        "client_or_scope": client,
        "requests": [{"model": "fast", "input": "x"}],
        "model": "fast",
        "input": "x",
        "tools": [],
        "handle": tether.DetachedResponse(response_id="resp_x", last_sequence_number=None),
        "journal": journal,
        "path": journal,
        "url": "redis://127.0.0.1:1/0" if "Redis" in name else "postgresql://127.0.0.1:1/x",
        "key": "k",
        "observer": lambda event: None,
        "fn": _tool_fn,
    }


def cases(modules: tuple[str, ...]) -> list[Any]:
    found: list[Any] = []
    for name, fn in public_callables():
        if not name.startswith(modules) or (
            name.startswith("tether.sync") != (modules == ("tether.sync",))
        ):
            continue
        for parameter in inspect.signature(fn).parameters.values():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            if parameter.name in SKIPPED or parameter.annotation == "Any":
                continue
            found.append(pytest.param(fn, parameter, id=f"{name}({parameter.name})"))
    return found


def call(
    fn: Callable[..., Any], parameter: inspect.Parameter, value: Any, valid: dict[str, Any]
) -> Any:
    """*fn* with *value* for *parameter*, every required other one valid."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for other in inspect.signature(fn).parameters.values():
        if other.kind in (other.VAR_KEYWORD, other.VAR_POSITIONAL):
            if other.kind == other.VAR_KEYWORD and "model" not in kwargs:
                kwargs.update(model="fast", input="x")
            continue
        if other.name == parameter.name:
            given_value = value
        elif other.default is other.empty or other.name == "journal":
            given_value = valid[other.name]
        else:
            continue
        if other.kind == other.POSITIONAL_ONLY:
            args.append(given_value)
        else:
            kwargs[other.name] = given_value
    return fn(*args, **kwargs)


def refused(caught: pytest.ExceptionInfo[BaseException], name: str, value: Any) -> None:
    message = str(caught.value)
    assert re.search(rf"\b{name}\b", message), f"{message!r} does not name {name}"
    shown = repr(value)
    if isinstance(value, (tuple, list, dict)) and shown not in message:  # the bad item
        items = value.values() if isinstance(value, dict) else value  # pyright: ignore[reportUnknownMemberType]
        assert any(repr(item) in message for item in items), f"{message!r} shows none of {shown}"
    else:
        assert shown in message or len(shown) > 200, f"{message!r} does not show {shown}"


@pytest.mark.parametrize(("fn", "parameter"), cases(("tether.",)))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_a_bad_argument_is_refused_naming_it_before_anything_is_sent(
    module_emulator: ResponsesEmulator,
    module_clients: tuple[Any, Any],
    journal_path: str,
    fn: Callable[..., Any],
    parameter: inspect.Parameter,
    data: st.DataObject,
) -> None:
    value = data.draw(bad_values(parameter.annotation), label=parameter.name)
    before = module_emulator.ledger.requests
    valid = valid_arguments(fn.__name__, module_clients[0], journal_path)
    with anyio.fail_after(WATCHDOG), pytest.raises((TypeError, ValueError)) as caught:
        result = call(fn, parameter, value, valid)
        if inspect.isawaitable(result):
            await result
        elif hasattr(result, "__aenter__"):
            async with result:
                pass
        elif hasattr(result, "__enter__"):
            with result:
                pass
    refused(caught, parameter.name, value)
    assert module_emulator.ledger.requests == before


@pytest.fixture(params=["asyncio", "trio"])
def portal_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sync facade's checks, with its portal on asyncio and on trio."""
    monkeypatch.setattr(_sync_portal, "BACKEND", request.param)
    return request.param


@pytest.mark.usefixtures("portal_backend")
@pytest.mark.parametrize(("fn", "parameter"), cases(("tether.sync",)))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_bad_argument_to_the_sync_facade_is_refused_naming_it_before_anything_is_sent(
    module_emulator: ResponsesEmulator,
    module_clients: tuple[Any, Any],
    journal_path: str,
    fn: Callable[..., Any],
    parameter: inspect.Parameter,
    data: st.DataObject,
) -> None:
    value = data.draw(bad_values(parameter.annotation), label=parameter.name)
    before = module_emulator.ledger.requests
    valid = valid_arguments(fn.__name__, module_clients[1], journal_path)
    with pytest.raises((TypeError, ValueError)) as caught:
        result = call(fn, parameter, value, valid)
        if hasattr(result, "__enter__"):
            with result:
                pass
    refused(caught, parameter.name, value)
    assert module_emulator.ledger.requests == before


def test_every_public_parameter_is_known() -> None:
    """A parameter whose annotation this file cannot reason about would go unchecked."""
    unknown = {
        f"{name}({p.name}: {p.annotation})": sorted(accepts(p.annotation) - KNOWN_PARTS)
        for name, fn in public_callables()
        for p in inspect.signature(fn).parameters.values()
        if p.name not in SKIPPED
        and p.annotation != "Any"
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and accepts(p.annotation) - KNOWN_PARTS
    }
    assert not unknown


def test_the_properties_cover_the_public_functions() -> None:
    """The introspection finds what the issue named: race, adaptive, run_agent, reap."""
    ids = {param.id for param in cases(("tether.",)) + cases(("tether.sync",))}
    for expected in (
        "tether.race(stagger)",
        "tether.run_agent(reserve)",
        "tether.adaptive(initial)",
        "tether.reap(include_live)",
        "tether.sync.race(stagger)",
    ):
        assert expected in ids
