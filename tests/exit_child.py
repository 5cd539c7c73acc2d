"""A script whose sync stream is left open in a generator when the script ends.

Run by tests/test_sync_scope.py: ``python tests/exit_child.py BASE_URL BACKEND MODE``. The
generator (a global, so only the interpreter's last collection closes it) is read once,
then the script prints ``READ`` and:

- ``raise``: fails with ``ValueError`` (its consumer raised), exit code 1;
- ``end``: ends normally, exit code 0;
- ``fork``: instead, with a scope entered and not exited, forks a child that ends normally
  (it has none of the portal threads that the scope it inherited was run by), prints
  ``FORKED <its exit status>``, and ends (the scope is exited at the exit).
"""

from __future__ import annotations

import os
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


if mode == "fork":
    scope = tether.sync.open_scope(client).__enter__()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # through the interpreter's exit, and its atexit hooks
    print("FORKED", os.waitpid(pid, 0)[1], flush=True)
    sys.exit(0)

left_open = deltas()
next(left_open)
print("READ", flush=True)
if mode == "raise":
    raise ValueError("the consumer failed")
