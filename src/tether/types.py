"""The literal aliases of tether's records: what ``reason``, ``kind`` and ``state`` can say.

Example:
    ```python
    from tether.types import EndReason

    def was_cancelled_by_us(reason: EndReason) -> bool:
        return reason not in ("completed", "failed", "incomplete", "cancelled")
    ```
"""

from __future__ import annotations

from ._errors import StallKind as StallKind
from ._outcome import EndReason as EndReason

__all__ = ["EndReason", "StallKind"]
