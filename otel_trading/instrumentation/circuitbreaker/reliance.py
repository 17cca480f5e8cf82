"""Everything of circuitbreaker (2.1.x) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import (
    ASYNC_GENERATOR,
    COROUTINE,
    FUNCTION,
    GENERATOR,
    Attribute,
    Function,
    Reliance,
    Shape,
)

__all__ = ["RELIANCE"]

_BREAKER = "circuitbreaker:CircuitBreaker"
_ENTRY = ("self", "func", "args", "kwargs")
_EXIT = ("self", "exc_type", "exc_value", "_traceback")

RELIANCE = Reliance(
    "circuitbreaker",
    functions=(
        # Replaced by our own ``with self:`` around the call: each entry method guards only
        # ``func(*args, **kwargs)`` with ``with self:`` (a generator forwards each item).
        Function(f"{_BREAKER}.call", shapes=(Shape(2, _ENTRY, (), FUNCTION),)),
        Function(f"{_BREAKER}.call_generator", shapes=(Shape(2, _ENTRY, (), GENERATOR),)),
        Function(f"{_BREAKER}.call_async", shapes=(Shape(2, _ENTRY, (), COROUTINE),)),
        Function(f"{_BREAKER}.call_async_generator", shapes=(Shape(2, _ENTRY, (), ASYNC_GENERATOR),)),
        Function(f"{_BREAKER}.__enter__"),
        # Decides the outcome: hands a failure to __call_failed while the block's exception is
        # being handled (the verdict reads it there), and nothing else.
        Function(
            f"{_BREAKER}.__exit__",
            shapes=(
                Shape(4, _EXIT, ("_CircuitBreaker__call_failed", "_last_failure", "is_failure", "reset"), FUNCTION),
            ),
        ),
        Function(f"{_BREAKER}.__call_failed", params=("self",)),
        Function(f"{_BREAKER}.__init__"),
        Function(f"{_BREAKER}.decorate"),
        # A rejection: the breaker it is raised for is its first argument.
        Function("circuitbreaker:CircuitBreakerError.__init__", params=("self", "circuit_breaker")),
    ),
    attributes=(
        Attribute(f"{_BREAKER}._name", set_by=("__init__", "decorate")),
        # The fast path: a call that starts closed (``_state is STATE_CLOSED``).
        Attribute(f"{_BREAKER}._state", set_by=("__init__",)),
        Attribute("circuitbreaker:STATE_CLOSED"),
        # The state gauge and transitions.
        Attribute(f"{_BREAKER}.state"),
        # The verdict's fallback when __exit__ is called outside exception handling.
        Attribute(f"{_BREAKER}._last_failure", set_by=("__exit__",)),
    ),
)
