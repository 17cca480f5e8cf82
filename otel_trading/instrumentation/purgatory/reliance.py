"""Everything of purgatory (3.0.x) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import COROUTINE, FUNCTION, Attribute, Function, Reliance, Shape

__all__ = ["RELIANCE"]

_MODEL = "purgatory.domain.model"
_SYNC = "purgatory.service._sync.circuitbreaker:SyncCircuitBreaker"
_ASYNC = "purgatory.service._async.circuitbreaker:AsyncCircuitBreaker"
# Entering a guarded block enters ``self.context``; exiting exits it, then hands its messages to
# ``self.messagebus``.
_ENTER = ("context", "__enter__")
_EXIT_PARAMS = ("self", "exc_type", "exc", "tb")
_EXIT = ("context", "__exit__", "messages", "messagebus", "handle", "pop", "uow")
_FILTER = (
    "BaseException", "Callable", "ExcludeExcType", "ExcludeTypeFunc", "_state", "bool", "cast", "exclude_list",
    "handle_end_request", "handle_exception", "isinstance", "tuple",
)  # fmt: skip
_STATES = ("ClosedState", "HalfOpenedState", "OpenedState")

RELIANCE = Reliance(
    "purgatory",
    functions=(
        Function(f"{_SYNC}.__enter__", shapes=(Shape(1, ("self",), _ENTER, FUNCTION),)),
        Function(f"{_SYNC}.__exit__", shapes=(Shape(4, _EXIT_PARAMS, _EXIT, FUNCTION),)),
        Function(f"{_ASYNC}.__aenter__", shapes=(Shape(1, ("self",), _ENTER, COROUTINE),)),
        Function(f"{_ASYNC}.__aexit__", shapes=(Shape(4, _EXIT_PARAMS, _EXIT, COROUTINE),)),
        # A failure is the exception a state's handle_exception is given: the context hands it
        # only the exceptions its exclude list does not exclude, on exit with an exception.
        Function(
            f"{_MODEL}:Context.__exit__",
            shapes=(Shape(4, ("self", "exc_type", "exc", "tb"), ("handle_end_request", "handle_exception"), FUNCTION),),
        ),
        Function(f"{_MODEL}:Context.handle_exception", shapes=(Shape(2, ("self", "exc"), _FILTER, FUNCTION),)),
        *(Function(f"{_MODEL}:{state}.handle_exception", params=("self", "context", "exc")) for state in _STATES),
        Function(f"{_MODEL}:Context.__init__"),
        Function(f"{_MODEL}:Context.set_state", params=("self", "state")),
    ),
    attributes=(
        Attribute(f"{_SYNC}.context", set_by=("__init__",)),
        Attribute(f"{_ASYNC}.context", set_by=("__init__",)),
        # Series are per circuit name; the state is the state object's ``name``.
        Attribute(f"{_MODEL}:Context.name", set_by=("__init__",)),
        Attribute(f"{_MODEL}:Context._state", set_by=("__init__", "set_state")),
        *(Attribute(f"{_MODEL}:{state}.name") for state in _STATES),
    ),
)
