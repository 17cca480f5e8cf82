"""pybreaker's names for the shared state-object adapter (``_core.state_object_breakers``)."""

from __future__ import annotations

from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation._core.state_object_breakers import Family, LibraryBreakers
from otel_trading.instrumentation.pybreaker.reliance import CLASS_PATHS, LOCKED_CALL, RELIANCE

__all__ = ["PYBREAKER", "breakers"]

# The storage holds the state's name; each state object has it as ``name``.
PYBREAKER = Family(
    "pybreaker",
    CLASS_PATHS,
    {"closed": CLOSED, "open": OPEN, "half-open": HALF_OPEN},
    state_name=lambda current: current,
    state_object_name=lambda state: getattr(state, "name", None),
    reliance=RELIANCE,
    locked_call=LOCKED_CALL,
)


def breakers(session: Session) -> LibraryBreakers:
    """The instrumentor's one target: the shared adapter with pybreaker's names."""
    return LibraryBreakers(session, PYBREAKER)
