"""Secrets out of store URLs: what a repr, an error, a log line or the CLI may show.

redis-py and libpq read a password from several places of a URL (the user-info, query
parameters, libpq's key/value string); ``redact_url`` masks every one of them and ``scrub``
masks them in a store's own error messages (tests/test_security.py: a property test).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

__all__ = ["redact_url", "scrub"]

_MASK = "***"
# A conninfo string's "password = 'it''s'" (libpq's key/value form): quoted, or up to a space.
_CONNINFO_SECRET = re.compile(
    r"(?P<name>\b[\w.-]*pass[\w.-]*\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s']+)", re.I
)


def _is_secret(name: str) -> bool:
    """Whether a query or conninfo parameter carries a secret: ``password`` (redis-py and
    libpq), libpq's ``sslpassword``, redis-py's ``ssl_password``, or any other name with
    ``pass`` in it (a ``passfile`` path is masked too: harmless)."""
    return "pass" in unquote_plus(name).lower()


def redact_url(url: str) -> str:
    """*url* without its secrets, fit for an error message, a repr or a log.

    Masks every form of password that redis-py and libpq read from a URL: the user-info's
    (``redis://:***@host``), a query parameter (``?password=***``, ``&sslpassword=***``,
    ``&ssl_password=***``, names percent-decoded as the clients decode them), and the
    ``password=***`` of a libpq key/value string (``"host=db password=***"``).

    Example:
        ``redact_url("redis://:s3cret@cache:6379/0?password=s3cret")`` is
        ``"redis://:***@cache:6379/0?password=***"``.
    """
    if "://" not in url:  # libpq's key/value form, or a path: mask "password = value"
        return _CONNINFO_SECRET.sub(lambda m: m["name"] + _MASK, url)
    scheme, rest = url.split("://", 1)
    # The authority ends at the first "/", "?" or "#" (RFC 3986, as urllib and libpq read it).
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{_MASK}@{hosts}"
    path, hash_, fragment = tail.partition("#")
    path, question, query = path.partition("?")
    if question:
        params = [
            f"{name}={_MASK}" if eq and _is_secret(name) else f"{name}{eq}{value}"
            for name, eq, value in (part.partition("=") for part in query.split("&"))
        ]
        query = "&".join(params)
    return f"{scheme}://{authority}{path}{question}{query}{hash_}{fragment}"


def scrub(text: str, url: str) -> str:
    """*text* (a store's error message) with *url* redacted, and every secret of *url* masked
    wherever it shows (a client that quotes the value it could not use)."""
    if url in text:
        text = text.replace(url, redact_url(url))
    for secret in _secrets(url):
        text = text.replace(secret, _MASK)
    return text


def _secrets(url: str) -> list[str]:
    """The secrets in *url*, as written and decoded (only those long enough to be told apart)."""
    found: list[str] = []
    if "://" in url:
        rest = url.split("://", 1)[1]
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        userinfo, at, _ = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        query = rest[end:].partition("#")[0].partition("?")[2]
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            if eq and _is_secret(name):
                found.append(value)
    else:
        found += [m["value"].strip("'") for m in _CONNINFO_SECRET.finditer(url)]
    decoded = [unquote_plus(s) for s in found] + [unquote(s) for s in found]
    return sorted({s for s in found + decoded if len(s) >= 4}, key=len, reverse=True)
