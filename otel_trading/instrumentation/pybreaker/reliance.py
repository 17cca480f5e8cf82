"""Everything of pybreaker (1.4.x) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import FUNCTION, Attribute, Function, Reliance, Shape

__all__ = ["LOCKED_CALL", "RELIANCE"]

_BREAKER = "pybreaker:CircuitBreaker"
_STATE = "pybreaker:CircuitBreakerState"
_CALL_PARAMS = ("self", "func", "args", "kwargs")

#: ``CircuitBreaker.call`` when it is exactly "under ``_lock``, return ``self.state.call(...)``":
#: then it is replaced by one doing the same plus the recording (no extra frame on the hot path);
#: otherwise the state's ``call`` is wrapped.
LOCKED_CALL = Shape(2, _CALL_PARAMS, ("_lock", "call", "state"), FUNCTION)
_VERDICT = ("_breaker", "_handle_success", "_inc_counter", "failure", "is_system_error", "listeners", "on_failure")

RELIANCE = Reliance(
    "pybreaker",
    functions=(
        Function(f"{_BREAKER}.__init__"),
        # A transition: (new_state, prev_state, notify) by position or keyword.
        Function(f"{_BREAKER}._create_new_state", params=("self", "new_state", "prev_state", "notify")),
        Function(f"{_BREAKER}._inc_counter", params=("self",)),
        # The guarded call returns normally only when the library ran _handle_success.
        Function(
            f"{_STATE}.call",
            shapes=(
                Shape(
                    2,
                    _CALL_PARAMS,
                    (
                        "BaseException",
                        "GeneratorType",
                        "_breaker",
                        "_handle_error",
                        "_handle_success",
                        "before_call",
                        "generator_call",
                        "isinstance",
                        "listeners",
                        "types",
                    ),
                    FUNCTION,
                ),
            ),
        ),
        # The verdict: _handle_error counts a failure through _inc_counter, or calls the error a success.
        Function(f"{_STATE}._handle_error", shapes=(Shape(3, ("self", "exc", "reraise"), _VERDICT, FUNCTION),)),
        Function(f"{_STATE}.generator_call", params=("self", "wrapped_generator")),
        # Tornado: the outcome is read from the future with the library's own predicate.
        Function(f"{_STATE}.call_async", params=_CALL_PARAMS),
        # A rejection: before_call raises without replacing the state (no half-open trial ran).
        Function("pybreaker:CircuitOpenState.before_call", params=_CALL_PARAMS),
    ),
    attributes=(
        Attribute("pybreaker:CircuitBreakerError"),
        Attribute(f"{_BREAKER}._name", set_by=("__init__",)),
        Attribute(f"{_BREAKER}._lock", set_by=("__init__",)),
        Attribute(f"{_BREAKER}._state", set_by=("__init__",)),
        Attribute(f"{_BREAKER}.current_state"),
        Attribute(f"{_BREAKER}.state"),
        Attribute(f"{_BREAKER}.name"),
        Attribute(f"{_BREAKER}.is_system_error"),
        Attribute(f"{_STATE}._breaker", set_by=("__init__",)),
        Attribute(f"{_STATE}.name"),
    ),
)
