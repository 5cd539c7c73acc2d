"""Building a guard from what users pass: tether's per-stream options, checked once.

Every way to open a guarded response (``guarded_stream`` async and sync, a race's attempts,
an agent's turns, a Temporal activity, ``resume``) builds its
[`ResponseGuard`][tether._protocol.ResponseGuard] here, so the options are defined once
(``StreamOptions``), the request is checked once (``check_request``: the names the installed
SDK's ``responses.create`` takes, a model, an input) and the scope's defaults fill what is
left ``None``.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, TypedDict, final

import attrs

from ._outcome import DetachedResponse
from ._protocol import ResponseGuard
from ._scope import Scope, as_scope
from ._validate import check_positive, check_timeout

if TYPE_CHECKING:
    from collections.abc import Mapping

    from openai import AsyncOpenAI

__all__ = ["StreamOptions", "build_guard", "check_request", "resume_guard"]


@final
@attrs.frozen(kw_only=True)
class StreamOptions:
    """tether's own options of one guarded stream, apart from the SDK's create kwargs.

    The one definition of what ``guarded_stream`` (async and sync), races' requests, agents'
    turns and Temporal activities pass to ``build_guard``; checked
    there. ``None`` means the scope's value (``grace``, ``first_event_timeout``) or no limit.
    """

    background: bool = True
    grace: float | None = None
    first_event_timeout: float | None = None
    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    key: str | None = None

    @classmethod
    def split(
        cls, request: Mapping[str, Any], *, grace: float | None = None
    ) -> tuple[StreamOptions, dict[str, Any]]:
        """tether's options out of a request dict (a race's attempt, an agent's turn), and the
        rest: the kwargs of ``responses.create``. *grace* applies unless the request sets its own.
        """
        create = dict(request)
        own: dict[str, Any] = {name: create.pop(name) for name in _OPTIONS if name in create}
        if grace is not None:
            own.setdefault("grace", grace)
        return cls(**own), create


_OPTIONS = tuple(field.name for field in attrs.fields(StreamOptions))


class _Timeouts(TypedDict):
    grace: float
    first_event_timeout: float
    first_token_timeout: float | None
    idle_timeout: float | None


def _timeouts(scope: Scope, options: StreamOptions) -> _Timeouts:
    """The options' timeouts checked, ``None`` replaced by the scope's defaults."""
    grace, first_event_timeout = options.grace, options.first_event_timeout
    return {
        "grace": scope.grace if grace is None else check_positive("grace", grace),
        "first_event_timeout": scope.first_event_timeout
        if first_event_timeout is None
        else check_positive("first_event_timeout", first_event_timeout),
        "first_token_timeout": check_timeout("first_token_timeout", options.first_token_timeout),
        "idle_timeout": check_timeout("idle_timeout", options.idle_timeout),
    }


def build_guard(
    scope: Scope | AsyncOpenAI, options: StreamOptions, create_kwargs: Mapping[str, Any]
) -> ResponseGuard:
    """The guard behind ``guarded_stream(...)``, checked the same way (for races and agents).

    Raises:
        TypeError: A bad option type, an unknown create keyword, no model or input.
        ValueError: ``stream=`` given, an empty key, a timeout out of range.
    """
    key, background = options.key, options.background
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty str or None, got {key!r}")
    the_scope = as_scope(scope)
    request = dict(create_kwargs)
    if "stream" in request:
        raise ValueError(
            f"guarded_stream always streams: do not pass stream=, got stream={request['stream']!r}"
        )
    if not isinstance(background, bool):
        raise TypeError(f"background must be a bool, got {background!r}")
    check_request(request)
    return ResponseGuard(
        the_scope,
        request=request,
        handle=None,
        background=background,
        key=key,
        **_timeouts(the_scope, options),
    )


@functools.cache
def _create_parameters() -> frozenset[str]:
    """The keyword arguments ``AsyncOpenAI().responses.create`` takes, on the installed SDK."""
    from openai.resources.responses import AsyncResponses

    return frozenset(inspect.signature(AsyncResponses.create).parameters) - {"self"}


def check_request(create_kwargs: dict[str, Any]) -> None:
    """What can be checked before sending: known names, a model, something to answer.

    Raises:
        TypeError: An unknown keyword, a model that is not a string, no ``input``.
    """
    unknown = sorted(set(create_kwargs) - _create_parameters())
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: neither a "
            "guarded_stream option nor a responses.create parameter"
        )
    model = create_kwargs.get("model")
    if "prompt" not in create_kwargs:
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str (or pass prompt=...), got {model!r}")
        if "input" not in create_kwargs:
            raise TypeError("guarded_stream() needs input=... (or prompt=...): got neither")
    elif model is not None and (not isinstance(model, str) or not model):
        raise TypeError(f"model must be a non-empty str, got {model!r}")


def resume_guard(
    scope: Scope | AsyncOpenAI,
    handle: DetachedResponse,
    *,
    grace: float | None = None,
    first_event_timeout: float | None = None,
    idle_timeout: float | None = None,
) -> ResponseGuard:
    """The guard behind ``resume(...)``, checked the same way (for the sync facade)."""
    the_scope = as_scope(scope)
    if not isinstance(handle, DetachedResponse):
        raise TypeError(f"handle must be a tether.DetachedResponse, got {handle!r}")
    if not isinstance(handle.response_id, str) or not handle.response_id:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"handle.response_id must be a response id, got {handle.response_id!r}")
    options = StreamOptions(
        grace=grace, first_event_timeout=first_event_timeout, idle_timeout=idle_timeout
    )
    return ResponseGuard(
        the_scope, request=None, handle=handle, background=True, **_timeouts(the_scope, options)
    )
