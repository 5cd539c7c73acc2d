"""A script whose sync stream is left open in a generator when the script ends.

Run by tests/test_sync_scope.py: ``python tests/exit_child.py BASE_URL BACKEND MODE``. The
generator (a global, so only the interpreter's last collection closes it) is read once,
then the script prints ``READ`` and:

- ``raise``: fails with ``ValueError`` (its consumer raised), exit code 1;
- ``end``: ends normally, exit code 0.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import openai

import tether.sync
from tether import _sync_portal

if TYPE_CHECKING:
    from collections.abc import Iterator

base_url, backend, mode = sys.argv[1:4]
_sync_portal.BACKEND = "trio" if backend == "trio" else "asyncio"
client = openai.OpenAI(base_url=base_url, api_key="sk-emulator")


def deltas() -> Iterator[str]:
    with tether.sync.guarded_stream(client, model="slow", input="hi") as stream:
        yield from stream.text_deltas()


left_open = deltas()
next(left_open)
print("READ", flush=True)
if mode == "raise":
    raise ValueError("the consumer failed")
