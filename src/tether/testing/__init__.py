"""An emulated OpenAI Responses API, to test cancellation offline.

[`ResponsesEmulator`][tether.testing.ResponsesEmulator] serves the Responses endpoints
on 127.0.0.1 with simulated [`EmulatedModel`][tether.testing.EmulatedModel]s (time to first token,
token rate, length, [`Faults`][tether.testing.Faults]) and keeps a
[`Ledger`][tether.testing.Ledger] of what every response did, so a test can assert
that nothing was left generating. The pytest fixtures `responses_emulator`,
`responses_emulator_h2`, `emulator_http2`, `emulated_client` and `emulated_async_client`
come with the package. It needs the `tether[testing]` extra: without it, importing this
module raises ImportError with the `pip install` line.

Example:
    >>> from tether.testing import EmulatedModel, ResponsesEmulator
    >>> with ResponsesEmulator(models={"fast": EmulatedModel(ttft=0.0, length=5)}) as emu:
    ...     text = emu.client().responses.create(model="fast", input="Hi").output_text
    >>> len(text.split())
    5
"""

from __future__ import annotations

from .._public import claim as _claim
from . import _extra  # noqa: F401  # pyright: ignore[reportUnusedImport]  # first: the install hint
from ._ledger import Ledger as Ledger
from ._models import EmulatedModel as EmulatedModel
from ._models import Faults as Faults
from ._models import FunctionCall as FunctionCall
from ._models import Turn as Turn
from ._server import ResponsesEmulator as ResponsesEmulator

__all__ = [
    "EmulatedModel",
    "Faults",
    "FunctionCall",
    "Ledger",
    "ResponsesEmulator",
    "Turn",
]

_claim(__name__, globals(), __all__)
