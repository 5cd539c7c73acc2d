"""tether: tie OpenAI Responses streams to structured-concurrency cancel scopes."""

from __future__ import annotations

__all__: list[str] = []
