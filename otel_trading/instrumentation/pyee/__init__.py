"""pyee's home: its instrumentor, entry point ``otel_trading_pyee``.

Beside it: ``package`` (the releases), ``reliance`` (what the hooks rely on, checked first) and
``hooks`` (the patches).
"""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.pyee.hooks import PyeeEmitters

__all__ = ["PyeeInstrumentor"]


class PyeeInstrumentor(LibraryInstrumentor, targets=(PyeeEmitters,)):
    """pyee's event emitters: events published, processed, failed, their duration, subscribers."""
