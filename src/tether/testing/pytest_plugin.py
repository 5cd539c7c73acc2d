"""The emulator's pytest fixtures, under their former module name.

The `tether` pytest plugin is `tether._pytest_plugin` (it loads without the `testing`
extra); this module re-exports its fixtures for `pytest_plugins = [...]` lists that name
`tether.testing.pytest_plugin`.
"""

from __future__ import annotations

from tether._pytest_plugin import (
    emulated_async_client as emulated_async_client,
)
from tether._pytest_plugin import (
    emulated_client as emulated_client,
)
from tether._pytest_plugin import (
    emulator_http2 as emulator_http2,
)
from tether._pytest_plugin import (
    responses_emulator as responses_emulator,
)
from tether._pytest_plugin import (
    responses_emulator_h2 as responses_emulator_h2,
)

__all__ = [
    "emulated_async_client",
    "emulated_client",
    "emulator_http2",
    "responses_emulator",
    "responses_emulator_h2",
]
