"""`python -m tether.testing --port N`: serve the Responses emulator in the foreground."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ._server import ResponsesEmulator

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until Ctrl-C.

    Example:
        >>> main(["--port", "8000"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="python -m tether.testing",
        description="Serve the emulated OpenAI Responses API until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and text")
    parser.add_argument(
        "--http2", action="store_true", help="serve HTTP/2 (h2c) too, with hypercorn"
    )
    args = parser.parse_args(argv)
    ResponsesEmulator.serve(port=args.port, host=args.host, seed=args.seed, http2=args.http2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
