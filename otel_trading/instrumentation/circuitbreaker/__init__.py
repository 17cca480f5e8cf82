"""circuitbreaker's home: its instrumentor, entry point ``otel_trading_circuitbreaker``.

Beside it: ``package`` (the releases), ``reliance`` (what the hooks rely on, checked first) and
``hooks`` (the patches).
"""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.circuitbreaker.hooks import CircuitbreakerBreakers

__all__ = ["CircuitbreakerInstrumentor"]


class CircuitbreakerInstrumentor(LibraryInstrumentor, targets=(CircuitbreakerBreakers,)):
    """``circuitbreaker.CircuitBreaker``, its decorators and subclasses: all breaker metrics."""
