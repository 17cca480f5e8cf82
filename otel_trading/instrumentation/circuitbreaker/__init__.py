"""circuitbreaker's home: its instrumentor (entry point ``otel_trading_circuitbreaker``); ``package`` (releases),
``reliance`` (what the hooks rely on, checked first) and ``hooks`` (the patches) beside it."""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.circuitbreaker.hooks import CircuitbreakerBreakers

__all__ = ["CircuitbreakerInstrumentor"]


class CircuitbreakerInstrumentor(LibraryInstrumentor, targets=(CircuitbreakerBreakers,)):
    """``circuitbreaker.CircuitBreaker``, its decorators and subclasses: all breaker metrics."""
