"""The HTTP library the installed openai SDK runs on: httpx2 (openai 3.x) or httpx (2.x)."""

from __future__ import annotations

import importlib

from tether._compat import OPENAI_MAJOR

httpx2 = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
"""The module (named for 3.x, the current major); ``httpx`` itself on openai 2.x."""
