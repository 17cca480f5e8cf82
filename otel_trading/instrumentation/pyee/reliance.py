"""Everything of pyee (12.1 .. 16.1) that its hooks rely on; checked before anything is patched."""

from __future__ import annotations

from otel_trading.instrumentation._core.reliance import FUNCTION, Attribute, Function, Reliance, Shape

__all__ = ["RELIANCE"]

# The shapes (see ``_core.reliance``) of the pyee functions the patches below were written for:
# ``_call_handlers`` hands every handler of the event to ``self._emit_run``; the asyncio
# ``_emit_run`` calls the handler and schedules a coroutine it returns (or watches a future), and
# its done-callback forgets the task and emits pyee's ``error`` for a failure; the executor
# ``_emit_run`` submits the handler to ``self._executor``. Checked against pyee 12.1 .. 16.1: 16.0
# made the executor callback return early for a cancelled future; 14-16 otherwise changed type
# hints only.
_CALL_HANDLERS_SHAPES = (
    Shape(
        4,
        ("self", "event", "args", "kwargs"),
        ("OrderedDict", "_emit_run", "_events", "_lock", "get", "list", "values"),
        FUNCTION,
    ),
)
_RUN_PARAMS = ("self", "f", "args", "kwargs")
_ASYNCIO_EMIT_RUN_SHAPES = (
    Shape(
        4,
        _RUN_PARAMS,
        (
            "Any", "Exception", "Future", "_loop", "_waiting", "add", "add_done_callback", "cancelled", "cast",
            "discard", "emit", "ensure_future", "exception", "iscoroutine", "isinstance",
        ),
        FUNCTION,
    ),
)  # fmt: skip
_EXECUTOR_RUN_NAMES = ("Exception", "_executor", "add_done_callback", "emit", "exception", "isinstance", "submit")
_EXECUTOR_EMIT_RUN_SHAPES = (
    Shape(4, _RUN_PARAMS, _EXECUTOR_RUN_NAMES, FUNCTION),
    Shape(4, _RUN_PARAMS, tuple(sorted((*_EXECUTOR_RUN_NAMES, "cancelled"))), FUNCTION),  # 16.0
)

_BASE = "pyee.base:EventEmitter"
_ASYNCIO = "pyee.asyncio:AsyncIOEventEmitter"
_EXECUTOR = "pyee.executor:ExecutorEventEmitter"

RELIANCE = Reliance(
    "pyee",
    functions=(
        Function(f"{_BASE}.__init__"),
        Function(f"{_BASE}._call_handlers", shapes=_CALL_HANDLERS_SHAPES),
        # The base class runs a handler inline: its own _emit_run is how "sync" is recognised.
        Function(f"{_BASE}._emit_run", params=("self", "f", "args", "kwargs")),
        # Imported here (they need only the standard library) so that pyee is instrumented whole
        # or left out whole: counting the events of an emitter whose handlers cannot be seen as
        # processed would show them stuck.
        Function(f"{_ASYNCIO}._emit_run", shapes=_ASYNCIO_EMIT_RUN_SHAPES, optional=True),
        Function(f"{_EXECUTOR}._emit_run", shapes=_EXECUTOR_EMIT_RUN_SHAPES, optional=True),
    ),
    attributes=(
        # The subscriber gauge reads the handler table; the queue gauge the asyncio emitter's tasks.
        Attribute(f"{_BASE}._events", set_by=("__init__",)),
        Attribute(f"{_BASE}._lock", set_by=("__init__",)),
        Attribute(f"{_ASYNCIO}._waiting", set_by=("__init__",)),
        # pyee.uplift: an event emitted once counts as published once.
        Attribute("pyee.uplift:EMIT_WRAPPERS"),
    ),
)
