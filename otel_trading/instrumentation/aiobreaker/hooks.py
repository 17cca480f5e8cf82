"""aiobreaker's names for the shared state-object adapter (``_core.state_object_breakers``)."""

from __future__ import annotations

from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation._core.state_object_breakers import Family, LibraryBreakers
from otel_trading.instrumentation.aiobreaker.reliance import CLASS_PATHS, RELIANCE

__all__ = ["AIOBREAKER", "breakers"]

#: The storage and each state object's ``state`` hold a ``CircuitBreakerState`` member.
AIOBREAKER = Family(
    "aiobreaker",
    CLASS_PATHS,
    {"CLOSED": CLOSED, "OPEN": OPEN, "HALF_OPEN": HALF_OPEN},
    state_name=lambda member: getattr(member, "name", None),
    state_object_name=lambda state: getattr(getattr(state, "state", None), "name", None),
    reliance=RELIANCE,
)


def breakers(session: Session) -> LibraryBreakers:
    """The instrumentor's one target: the shared adapter with aiobreaker's names."""
    return LibraryBreakers(session, AIOBREAKER)
