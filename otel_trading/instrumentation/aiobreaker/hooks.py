"""aiobreaker's names for the shared state-object adapter (``_core.state_object_breakers``)."""

from __future__ import annotations

import sys
import types
from typing import Any

from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation._core.state_object_breakers import Classes, Family, LibraryBreakers
from otel_trading.instrumentation.aiobreaker.reliance import RELIANCE

__all__ = ["AIOBREAKER", "breakers"]

_STATES = {"CLOSED": CLOSED, "OPEN": OPEN, "HALF_OPEN": HALF_OPEN}


def _classes(module: types.ModuleType) -> Classes:
    state = sys.modules["aiobreaker.state"]
    return Classes(
        module.CircuitBreaker, state.CircuitBreakerBaseState, state.CircuitOpenState, state.CircuitBreakerError
    )


def _code(value: Any) -> int | None:
    name = getattr(value, "name", None)
    return _STATES.get(name) if isinstance(name, str) else None


AIOBREAKER = Family(
    target="aiobreaker",
    module="aiobreaker",
    classes=_classes,
    state_code=_code,
    state_object_code=lambda state: _code(getattr(state, "state", None)),
    reliance=RELIANCE,
)


def breakers(session: Session) -> LibraryBreakers:
    """The instrumentor's one target: the shared adapter with aiobreaker's names."""
    return LibraryBreakers(session, AIOBREAKER)
