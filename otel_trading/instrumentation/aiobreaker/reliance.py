"""Everything of aiobreaker (1.1 .. 1.2) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import FUNCTION, Attribute, Function, Shape
from otel_trading.instrumentation._core.state_object_breakers import state_object_reliance

__all__ = ["CLASS_PATHS", "RELIANCE"]

_MODULE = "aiobreaker.state"
#: Its breaker, base state, open state and error.
CLASS_PATHS = (
    "aiobreaker:CircuitBreaker", f"{_MODULE}:CircuitBreakerBaseState", f"{_MODULE}:CircuitOpenState",
    f"{_MODULE}:CircuitBreakerError",
)  # fmt: skip
_STATE = CLASS_PATHS[1]
# _handle_error counts a failure through _inc_counter, or calls the error a success.
_VERDICT = ("_breaker", "_handle_success", "_inc_counter", "failure", "is_system_error", "listeners", "on_failure")

RELIANCE = state_object_reliance(
    "aiobreaker",
    CLASS_PATHS,
    functions=(
        Function(f"{_STATE}.call", params=("self", "func", "args", "kwargs")),
        Function(f"{_STATE}._handle_error", shapes=(Shape(3, ("self", "func", "exception"), _VERDICT, FUNCTION),)),
    ),
    attributes=(
        # A state object's ``state`` (and the storage) is a ``CircuitBreakerState`` member, read by name.
        Attribute(f"{_STATE}.state"),
        *(Attribute(f"{_MODULE}:CircuitBreakerState.{member}") for member in ("CLOSED", "OPEN", "HALF_OPEN")),
    ),
)
