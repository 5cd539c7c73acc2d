"""What the benchmarks share: counting, through the API, the responses still generating."""

from __future__ import annotations

import anyio
import openai


async def still_generating(client: openai.AsyncOpenAI, ids: list[str]) -> int:
    """How many of *ids* the server still reports ``queued`` or ``in_progress`` (orphans,
    once the client meant to stop them), asked 50 at a time."""
    limiter = anyio.CapacityLimiter(50)
    generating = 0

    async def check(response_id: str) -> None:
        nonlocal generating
        async with limiter:
            status = (await client.responses.retrieve(response_id)).status
        generating += status in ("queued", "in_progress")

    async with anyio.create_task_group() as tg:
        for response_id in ids:
            tg.start_soon(check, response_id)
    return generating
