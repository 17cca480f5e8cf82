"""purgatory's home: its instrumentor (entry point ``otel_trading_purgatory``), releases, reliance and hooks.

- ``package.py``: ``_instruments`` (the supported range) and the releases the test matrix runs;
- ``reliance.py``: every name of purgatory the hooks rely on, checked before anything is patched;
- ``hooks.py``: the patches (the pure-Python twins of the compiled hot paths).
"""

from __future__ import annotations

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor, Target
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation.purgatory.hooks import PurgatoryBreakers
from otel_trading.instrumentation.purgatory.package import _instruments

__all__ = ["PurgatoryInstrumentor"]


class PurgatoryInstrumentor(LibraryInstrumentor):
    """purgatory's sync and async circuit breakers."""

    target = "purgatory"
    _instruments = _instruments

    def _targets(self, session: Session) -> list[Target]:
        return [PurgatoryBreakers(session)]
