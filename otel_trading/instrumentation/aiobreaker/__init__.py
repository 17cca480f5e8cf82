"""aiobreaker's home: its instrumentor, entry point ``otel_trading_aiobreaker``.

Beside it: ``package`` (the releases), ``reliance`` (what the hooks rely on, checked first) and
``hooks`` (the patches).
"""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.aiobreaker.hooks import breakers

__all__ = ["AiobreakerInstrumentor"]


class AiobreakerInstrumentor(LibraryInstrumentor, targets=(breakers,)):
    """``aiobreaker.CircuitBreaker``: calls, failures, rejections, transitions, state, latency."""
