"""Every exception otel-trading raises on purpose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_trading.circuit_breaker import CircuitState

__all__ = ["CircuitOpenError", "ConfigurationError", "EventBusStoppedError", "InstrumentConfigurationError"]


class CircuitOpenError(RuntimeError):
    """Raised instead of calling the guarded function while the breaker rejects calls."""

    def __init__(self, name: str, state: CircuitState, retry_after: float) -> None:
        self.name = name
        self.state = state
        self.retry_after = retry_after
        super().__init__(f"circuit breaker {name!r} is {state.name}; retry in {retry_after:.3f}s")


class EventBusStoppedError(RuntimeError):
    """An event was refused because its bus is stopped (or stopped before the event got a place).

    The refusal is also counted in ``EventBus.dropped`` and logged, for publishers that do not
    wait for the result (``publish_threadsafe``).
    """


class ConfigurationError(ValueError):
    """Start-up configuration is invalid; the message lists every problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid otel-trading metrics configuration:\n  - " + "\n  - ".join(self.problems))


class InstrumentConfigurationError(ConfigurationError):
    """The instrumentation configuration is invalid; ``problems`` names every bad entry."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(problems)
        header = "invalid otel-trading instrumentation configuration:"
        self.args = (header + "\n  - " + "\n  - ".join(self.problems),)
