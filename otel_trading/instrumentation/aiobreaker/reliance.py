"""Everything of aiobreaker (1.1 .. 1.2) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import FUNCTION, Attribute, Function, Reliance, Shape

__all__ = ["RELIANCE"]

_BREAKER = "aiobreaker:CircuitBreaker"
_STATE = "aiobreaker.state:CircuitBreakerBaseState"
_CALL_PARAMS = ("self", "func", "args", "kwargs")
_VERDICT = ("_breaker", "_handle_success", "_inc_counter", "failure", "is_system_error", "listeners", "on_failure")

RELIANCE = Reliance(
    "aiobreaker",
    functions=(
        Function(f"{_BREAKER}.__init__"),
        # A transition: (new_state, prev_state, notify) by position or keyword.
        Function(f"{_BREAKER}._create_new_state", params=("self", "new_state", "prev_state", "notify")),
        Function(f"{_BREAKER}._inc_counter", params=("self",)),
        Function(f"{_STATE}.call", params=_CALL_PARAMS),
        Function(f"{_STATE}.call_async", params=_CALL_PARAMS),
        Function(f"{_STATE}.generator_call", params=("self", "wrapped_generator")),
        # The verdict: _handle_error counts a failure through _inc_counter, or calls the error a success.
        Function(f"{_STATE}._handle_error", shapes=(Shape(3, ("self", "func", "exception"), _VERDICT, FUNCTION),)),
        # A rejection: before_call raises without replacing the state.
        Function("aiobreaker.state:CircuitOpenState.before_call", params=_CALL_PARAMS),
    ),
    attributes=(
        Attribute("aiobreaker.state:CircuitBreakerError"),
        Attribute(f"{_BREAKER}._name", set_by=("__init__",)),
        Attribute(f"{_BREAKER}._state", set_by=("__init__",)),
        Attribute(f"{_BREAKER}.current_state"),
        Attribute(f"{_BREAKER}.name"),
        Attribute(f"{_STATE}._breaker", set_by=("__init__",)),
        Attribute(f"{_STATE}.state"),
        # A state object's ``state`` is one of these members, read by name.
        *(Attribute(f"aiobreaker.state:CircuitBreakerState.{member}") for member in ("CLOSED", "OPEN", "HALF_OPEN")),
    ),
)
