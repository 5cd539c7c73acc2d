"""Bad input never reaches the server; the API key never leaves the client."""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tether
from tether._redact import redact_url
from tether.cli import main
from tether.testing import ResponsesEmulator

SECRET = "sk-tether-test-secret-0123456789"

# ------------------------------------------------------------------ bad input, by property


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[ResponsesEmulator]:
    """One emulator for the property tests (hypothesis reruns a test body, not its fixtures)."""
    with ResponsesEmulator(seed=3) as emu:
        yield emu


@pytest.fixture(scope="module")
def module_client(module_emulator: ResponsesEmulator) -> openai.AsyncOpenAI:
    """One client for them: nothing here sends a request (the ledger checks), and a new
    client a run costs its TLS context (tens of milliseconds)."""
    return module_emulator.async_client()


def _valid_seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (isinstance(value, float) or abs(value) < 2**1023)
        and math.isfinite(value)
        and value > 0
    )


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.just(10**400),  # too large for a float: a ValueError, not an OverflowError
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.ascii_letters + string.digits + " .-", max_size=5),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(
    argument=st.sampled_from(["grace", "first_event_timeout", "deadline"]),
    value=anything,
)
def test_open_scope_rejects_bad_numbers_naming_the_argument(
    module_emulator: ResponsesEmulator, module_client: openai.AsyncOpenAI, argument: str, value: Any
) -> None:
    before = module_emulator.ledger.requests
    client = module_client
    optional = argument == "deadline"
    if (optional and value is None) or _valid_seconds(value):
        tether.open_scope(client, **{argument: value})
    else:
        with pytest.raises((ValueError, TypeError), match=argument) as caught:
            tether.open_scope(client, **{argument: value})
        assert repr(value) in str(caught.value)  # the message shows the value
    assert module_emulator.ledger.requests == before


@settings(max_examples=150, deadline=None)
@given(
    argument=st.sampled_from(
        ["grace", "first_event_timeout", "first_token_timeout", "idle_timeout"]
    ),
    value=anything,
)
def test_guarded_stream_rejects_bad_numbers_naming_the_argument(
    module_emulator: ResponsesEmulator, module_client: openai.AsyncOpenAI, argument: str, value: Any
) -> None:
    before = module_emulator.ledger.requests
    client = module_client
    if value is None or _valid_seconds(value):
        tether.guarded_stream(client, model="gpt-5-nano", input="x", **{argument: value})
    else:
        with pytest.raises((ValueError, TypeError), match=argument):
            tether.guarded_stream(client, model="gpt-5-nano", input="x", **{argument: value})
    assert module_emulator.ledger.requests == before


@settings(max_examples=60, deadline=None)
@given(value=anything)
def test_max_concurrency_accepts_only_positive_integers(
    module_client: openai.AsyncOpenAI, value: Any
) -> None:
    client = module_client
    valid = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if valid:
        tether.open_scope(client, max_concurrency=value)
    else:
        with pytest.raises(ValueError, match="max_concurrency"):
            tether.open_scope(client, max_concurrency=value)


@settings(max_examples=40, deadline=None)
@given(
    client=st.one_of(
        st.none(),
        st.integers(),
        st.text(alphabet=string.ascii_letters, max_size=3),
        st.just(object()),
    )
)
def test_anything_but_an_async_client_is_refused(client: Any) -> None:
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        tether.guarded_stream(client, model="m", input="x")
    with pytest.raises(TypeError, match="AsyncOpenAI"):
        tether.open_scope(client)


# ------------------------------------------------------------------ the API key


@pytest.mark.leaves_responses_generating(
    "the cancel hangs: tether gives up after grace and the response runs on"
)
async def test_the_api_key_is_not_in_logs_reprs_or_errors(
    emulator: ResponsesEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream whose cancel fails logs a warning and records errors: none shows the key."""
    caplog.set_level(logging.DEBUG, logger="tether")
    async with emulator.async_client(api_key=SECRET) as client:
        with pytest.raises(tether.StallError) as caught:
            async with tether.open_scope(client, grace=0.2) as scope:
                async with tether.guarded_stream(
                    scope, model="hanging-cancel", input="hi", idle_timeout=1e-3
                ) as stream:
                    async for _ in stream:
                        pass
    texts = [
        caplog.text,
        repr(stream.outcome),
        repr(stream.outcome.receipt),
        str(caught.value),
        repr(caught.value),
        *getattr(caught.value, "__notes__", []),
        repr(scope),
        repr(stream),
    ]
    assert stream.outcome.cleanup_error is not None  # the failure path really ran
    for text in texts:
        assert SECRET not in text


async def test_an_authentication_error_from_the_server_does_not_echo_the_key(
    emulator: ResponsesEmulator,
) -> None:
    async with openai.AsyncOpenAI(
        api_key=SECRET, base_url=emulator.base_url.replace("/v1", "/nowhere"), max_retries=0
    ) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            async with tether.guarded_stream(client, model="fast", input="hi"):
                pass
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("value", ["no", 1, None])
def test_open_scope_confirm_must_be_a_bool(module_client: openai.AsyncOpenAI, value: Any) -> None:
    with pytest.raises(TypeError, match=rf"confirm must be a bool, got {value!r}"):
        tether.open_scope(module_client, confirm=value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": None, "input": "x"}, "model must be a non-empty str"),
        ({"model": "", "input": "x"}, "model must be a non-empty str"),
        ({"model": "m"}, "needs input="),
        ({"model": "m", "input": "x", "dealine": 3}, "'dealine'"),
    ],
)
def test_guarded_stream_checks_the_request_before_sending(
    module_emulator: ResponsesEmulator,
    module_client: openai.AsyncOpenAI,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    before = module_emulator.ledger.requests
    with pytest.raises(TypeError, match=match):
        tether.guarded_stream(module_client, **kwargs)
    assert module_emulator.ledger.requests == before


def test_resume_refuses_a_handle_without_an_id(module_client: openai.AsyncOpenAI) -> None:
    handle = tether.DetachedResponse(response_id=None, last_sequence_number=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"handle\.response_id"):
        tether.resume(module_client, handle)


# ------------------------------------------------------------------ store passwords in URLs


def _read_redis(url: str) -> dict[str, Any]:
    from redis.connection import parse_url

    return dict(parse_url(url))


def _read_libpq(url: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    return dict(conninfo_to_dict(url))


def _quote_some(name: str, which: list[bool]) -> str:
    """*name* with the characters *which* marks percent-encoded (the clients decode names)."""
    return "".join(f"%{ord(c):02X}" if q else c for c, q in zip(name, which, strict=True))


@st.composite
def secret_urls(draw: st.DrawFn) -> tuple[str, str, str, Callable[[str], dict[str, Any]]]:
    """A URL that carries a secret in one of the forms redis-py or libpq read: (url, secret,
    the client's name for it, the client's own parser)."""
    secret = "S3cr" + draw(
        st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
    )
    encoded = quote(secret, safe="")
    form = draw(st.sampled_from(["userinfo", "query", "conninfo"]))
    client = draw(st.sampled_from(["redis", "libpq"]))
    if form == "conninfo":  # libpq's key/value string: host=... password='...'
        name = draw(st.sampled_from(["password", "sslpassword"]))
        quoted = secret.replace("\\", "\\\\").replace("'", "\\'")
        return f"host=db {name} = '{quoted}' dbname=app", secret, name, _read_libpq
    base = {
        "redis": draw(
            st.sampled_from(["redis://{}db:6379/0", "rediss://{}db/1", "unix://{}/run/r.sock"])
        ),
        "libpq": draw(
            st.sampled_from(["postgresql://{}db:5432/app", "postgres://{}db1:5432,db2/app"])
        ),
    }[client]
    reader = _read_redis if client == "redis" else _read_libpq
    user = draw(st.sampled_from(["", "app"]))
    if form == "userinfo":
        return (
            base.format(f"{user}:{encoded}@") + "?connect_timeout=2" * (client == "libpq"),
            secret,
            "password",
            reader,
        )
    names = ["password", "ssl_password"] if client == "redis" else ["password", "sslpassword"]
    field = draw(st.sampled_from(names))
    name = _quote_some(
        field, draw(st.lists(st.booleans(), min_size=len(field), max_size=len(field)))
    )
    other = "application_name=x" if client == "libpq" else "socket_keepalive=1"
    query = draw(st.permutations([f"{name}={encoded}", other]))
    return base.format(f"{user}@" if user else "") + "?" + "&".join(query), secret, field, reader


@settings(max_examples=300, deadline=None)
@given(case=secret_urls())
def test_redact_url_masks_every_password_form_the_clients_read(
    case: tuple[str, str, str, Callable[[str], dict[str, Any]]],
) -> None:
    url, secret, field, read = case
    assert read(url)[field] == secret  # a form the client really reads
    redacted = redact_url(url)
    assert secret not in redacted
    assert quote(secret, safe="") not in redacted
    assert secret not in read(redacted).values()  # nor anything the client would read from it
    assert {k: v for k, v in read(redacted).items() if "pass" not in k} == {
        k: v for k, v in read(url).items() if "pass" not in k
    }  # and nothing else changed


STORE_SECRET = "pw-S3cret-0123456789"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:1/0?password={STORE_SECRET}",
        f"postgresql://app@127.0.0.1:1/app?password={STORE_SECRET}",
        f"postgresql://app@127.0.0.1:1/app?sslpassword={STORE_SECRET}",
    ],
)
async def test_a_store_password_in_the_query_is_in_no_repr_error_or_log(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal's repr, its JournalError (the store is down) and the log never show it."""
    caplog.set_level(logging.DEBUG, logger="tether")
    journal = tether.open_journal(url)
    with pytest.raises(tether.JournalError) as caught:
        await journal.check()
    journal.close()  # pyright: ignore[reportAttributeAccessIssue]
    for text in (repr(journal), str(caught.value), repr(caught.value), caplog.text):
        assert STORE_SECRET not in text


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:1/0?password={STORE_SECRET}",
        f"postgresql://app@127.0.0.1:1/app?password={STORE_SECRET}",
    ],
)
def test_a_store_password_in_the_query_is_not_in_the_clis_output(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["cancel", "--journal", url, "--key", "k"])
    captured = capsys.readouterr()
    assert code != 0, captured.out
    assert "127.0.0.1:1" in captured.out + captured.err  # the error names the store...
    assert STORE_SECRET not in captured.out + captured.err  # ...without its password
