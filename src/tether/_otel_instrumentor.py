"""Zero-code OpenTelemetry: ``opentelemetry-instrument python app.py`` traces tether.

``opentelemetry-instrument`` (``opentelemetry-instrumentation``) loads every instrumentor
registered under the ``opentelemetry_instrumentor`` entry point and calls its
``instrument()`` after the SDK's providers are set up; tether's registers
[`tether.otel.instrument`][tether.otel.instrument] there (``pyproject.toml``). Imported
only through that entry point, so ``tether.otel`` itself needs no
``opentelemetry-instrumentation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.instrumentor import (  # pyright: ignore[reportMissingTypeStubs]
    BaseInstrumentor,
)

from . import otel

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["TetherInstrumentor"]


class TetherInstrumentor(BaseInstrumentor):  # pyright: ignore[reportUntypedBaseClass]
    """tether's instrumentor, for ``opentelemetry-instrument`` and ``BaseInstrumentor``'s API.

    Example:
        ```python
        from tether._otel_instrumentor import TetherInstrumentor

        TetherInstrumentor().instrument()  # what opentelemetry-instrument does for you
        ```
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """The packages tether instruments through (none beyond tether itself)."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        otel.instrument(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        otel.uninstrument()
