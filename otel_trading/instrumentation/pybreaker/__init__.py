"""pybreaker's home: its instrumentor (entry point ``otel_trading_pybreaker``), releases, reliance and hooks.

- ``package.py``: ``_instruments`` (the supported range) and the releases the test matrix runs;
- ``reliance.py``: every name of pybreaker the hooks rely on, checked before anything is patched;
- ``hooks.py``: the patches (the pure-Python twins of the compiled hot paths).
"""

from __future__ import annotations

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor, Target
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation._core.state_object_breakers import LibraryBreakers
from otel_trading.instrumentation.pybreaker.hooks import PYBREAKER
from otel_trading.instrumentation.pybreaker.package import _instruments

__all__ = ["PybreakerInstrumentor"]


class PybreakerInstrumentor(LibraryInstrumentor):
    """``pybreaker.CircuitBreaker``."""

    target = "pybreaker"
    _instruments = _instruments

    def _targets(self, session: Session) -> list[Target]:
        return [LibraryBreakers(session, PYBREAKER)]
