"""pybreaker's home: its instrumentor, entry point ``otel_trading_pybreaker``.

Beside it: ``package`` (the releases), ``reliance`` (what the hooks rely on, checked first) and
``hooks`` (the patches).
"""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.pybreaker.hooks import breakers

__all__ = ["PybreakerInstrumentor"]


class PybreakerInstrumentor(LibraryInstrumentor, targets=(breakers,)):
    """``pybreaker.CircuitBreaker``: calls, failures, rejections, transitions, state, latency."""
