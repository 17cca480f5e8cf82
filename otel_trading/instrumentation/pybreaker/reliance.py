"""Everything of pybreaker (1.4.x) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import FUNCTION, Attribute, Function, Shape
from otel_trading.instrumentation._core.state_object_breakers import state_object_reliance

__all__ = ["CLASS_PATHS", "LOCKED_CALL", "RELIANCE"]

#: Its breaker, base state, open state and error.
CLASS_PATHS = (
    "pybreaker:CircuitBreaker", "pybreaker:CircuitBreakerState", "pybreaker:CircuitOpenState",
    "pybreaker:CircuitBreakerError",
)  # fmt: skip
_BREAKER, _STATE = CLASS_PATHS[:2]

#: ``CircuitBreaker.call`` when it is exactly "under ``_lock``, return ``self.state.call(...)``":
#: then it is replaced by one doing the same plus the recording (no extra frame on the hot path);
#: otherwise the state's ``call`` is wrapped.
LOCKED_CALL = Shape(2, ("self", "func", "args", "kwargs"), ("_lock", "call", "state"), FUNCTION)
# The guarded call returns normally only when the library ran _handle_success; _handle_error counts
# a failure through _inc_counter, or calls the error a success.
_CALL_NAMES = (
    "BaseException", "GeneratorType", "_breaker", "_handle_error", "_handle_success", "before_call",
    "generator_call", "isinstance", "listeners", "types",
)  # fmt: skip
_VERDICT = ("_breaker", "_handle_success", "_inc_counter", "failure", "is_system_error", "listeners", "on_failure")

RELIANCE = state_object_reliance(
    "pybreaker",
    CLASS_PATHS,
    functions=(
        Function(f"{_STATE}.call", shapes=(Shape(2, ("self", "func", "args", "kwargs"), _CALL_NAMES, FUNCTION),)),
        Function(f"{_STATE}._handle_error", shapes=(Shape(3, ("self", "exc", "reraise"), _VERDICT, FUNCTION),)),
    ),
    attributes=(
        # The locked call; Tornado's call_async reads the outcome with the library's own predicate.
        Attribute(f"{_BREAKER}._lock", set_by=("__init__",)),
        Attribute(f"{_BREAKER}.state"),
        Attribute(f"{_BREAKER}.is_system_error"),
        # The state storage and each state object hold the state's name.
        Attribute(f"{_STATE}.name"),
    ),
)
