"""purgatory's home: its instrumentor, entry point ``otel_trading_purgatory``.

Beside it: ``package`` (the releases), ``reliance`` (what the hooks rely on, checked first) and
``hooks`` (the patches).
"""

from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor
from otel_trading.instrumentation.purgatory.hooks import PurgatoryBreakers

__all__ = ["PurgatoryInstrumentor"]


class PurgatoryInstrumentor(LibraryInstrumentor, targets=(PurgatoryBreakers,)):
    """purgatory's sync and async breakers, decorators and context managers: all breaker metrics."""
