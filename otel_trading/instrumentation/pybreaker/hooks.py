"""pybreaker's names for the shared state-object adapter (``_core.state_object_breakers``)."""

from __future__ import annotations

import types
from typing import Any

from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation._core.state_object_breakers import Classes, Family, LibraryBreakers
from otel_trading.instrumentation.pybreaker.reliance import LOCKED_CALL, RELIANCE

__all__ = ["PYBREAKER", "breakers"]

_STATES = {"closed": CLOSED, "open": OPEN, "half-open": HALF_OPEN}


def _classes(module: types.ModuleType) -> Classes:
    return Classes(
        module.CircuitBreaker, module.CircuitBreakerState, module.CircuitOpenState, module.CircuitBreakerError
    )


def _code(value: Any) -> int | None:
    return _STATES.get(value) if isinstance(value, str) else None


PYBREAKER = Family(
    target="pybreaker",
    module="pybreaker",
    classes=_classes,
    state_code=_code,
    state_object_code=lambda state: _code(getattr(state, "name", None)),
    reliance=RELIANCE,
    locked_call=LOCKED_CALL,
)


def breakers(session: Session) -> LibraryBreakers:
    """The instrumentor's one target: the shared adapter with pybreaker's names."""
    return LibraryBreakers(session, PYBREAKER)
