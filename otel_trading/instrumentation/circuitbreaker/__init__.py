"""circuitbreaker's home: its instrumentor (entry point ``otel_trading_circuitbreaker``), releases, reliance and hooks.

- ``package.py``: ``_instruments`` (the supported range) and the releases the test matrix runs;
- ``reliance.py``: every name of circuitbreaker the hooks rely on, checked before anything is patched;
- ``hooks.py``: the patches (the pure-Python twins of the compiled hot paths).
"""

from __future__ import annotations

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor, Target
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation.circuitbreaker.hooks import CircuitbreakerBreakers
from otel_trading.instrumentation.circuitbreaker.package import _instruments

__all__ = ["CircuitbreakerInstrumentor"]


class CircuitbreakerInstrumentor(LibraryInstrumentor):
    """``circuitbreaker.CircuitBreaker`` and its decorators."""

    target = "circuitbreaker"
    _instruments = _instruments

    def _targets(self, session: Session) -> list[Target]:
        return [CircuitbreakerBreakers(session)]
