"""pyee's home: its instrumentor (entry point ``otel_trading_pyee``), releases, reliance and hooks.

- ``package.py``: ``_instruments`` (the supported range) and the releases the test matrix runs;
- ``reliance.py``: every name of pyee the hooks rely on, checked before anything is patched;
- ``hooks.py``: the patches (the pure-Python twins of the compiled hot paths).
"""

from __future__ import annotations

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor, Target
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation.pyee.hooks import PyeeEmitters
from otel_trading.instrumentation.pyee.package import _instruments

__all__ = ["PyeeInstrumentor"]


class PyeeInstrumentor(LibraryInstrumentor):
    """pyee's event emitters."""

    target = "pyee"
    _instruments = _instruments

    def _targets(self, session: Session) -> list[Target]:
        return [PyeeEmitters(session)]
