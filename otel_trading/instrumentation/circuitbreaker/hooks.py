"""circuitbreaker (fabfuel, 2.x): all breaker metrics, read from the library's own decision points.

``circuitbreaker`` guards a call with ``with self:`` inside four entry methods that its decorators
(``@circuit``, ``@CircuitBreaker(...)``, subclasses) call; ``__exit__`` decides the outcome through
the breaker's ``expected_exception`` predicate. What is patched, and what each patch records:

==========================================  ======================================================
``CircuitBreaker.call``, ``call_async``,    replaced by our own ``with self:`` around the call plus
``call_generator``,                         the recording (no extra frame): the guarded block is timed
``call_async_generator``                    (for generators, from the first ``next()`` to the end);
                                            a normal end is a success
``CircuitBreaker._CircuitBreaker__call_     the library counts a failure: the exception passing
failed``                                    through the entry method is a failure, any other one
                                            (excluded by ``expected_exception``) a success, as the
                                            library itself resets the breaker on it
``CircuitBreakerError.__init__``            a rejection of the breaker it is given, however it is
                                            raised (the decorators raise it before ``call`` runs)
``CircuitBreaker.__init__``, ``decorate``   bind the breaker under its ``name`` (``decorate`` names
                                            an unnamed breaker after the function)
==========================================  ======================================================

The replacements are installed only over methods of the shapes they were written for
(``_core.reliance``); otherwise circuitbreaker is left out whole, with one warning. The state gauge
reads the library's ``state`` property (``closed``/``open``/``half_open`` -> 0/1/2, the half-open
state being the library's own timer-based reading); transitions are the changes between
successive readings, taken before and after every call that does not start closed, after every
failure and rejection, and at every collection. Breakers are found when the library is imported,
created or decorated later (``CircuitBreakerMonitor`` is left as it is), or on their first call.
Calls served by a ``fallback_function`` while the breaker is open raise nothing and are not
counted; a bare ``with breaker:`` block outside the entry methods is not counted either.
"""

from __future__ import annotations

import sys
import threading
import types
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.binding import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerBinding,
    bind_weakly,
    breaker_label,
    record_timed,
)
from otel_trading.instrumentation._core.hot_path import named_as
from otel_trading.instrumentation._core.identity import keep_by_id
from otel_trading.instrumentation._core.reliance import (
    ASYNC_GENERATOR,
    COROUTINE,
    FUNCTION,
    GENERATOR,
    Shape,
    library_matches,
    version_of,
)
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.recording import B0, BOUNDS, C0, C1, C2, MAX, MIN, SUM, Row, Series
from otel_trading.recording.rows import CountedThreadRows

__all__ = ["CircuitbreakerBreakers"]

_STATES = {"closed": CLOSED, "open": OPEN, "half_open": HALF_OPEN}
_FIRST_BOUND = BOUNDS[0]

# The shapes (see ``_core.reliance``) of the library's methods our replacements rely on: each entry
# method only guards ``func(*args, **kwargs)`` with ``with self:`` (a generator forwards each item),
# referring to no other name; ``__exit__`` hands a failure to ``__call_failed`` while the block's
# exception is being handled (the verdict reads it there: ``sys.exc_info()``), and nothing else.
# Checked against circuitbreaker 2.1.0 .. 2.1.3.
_ENTRY_PARAMS = ("self", "func", "args", "kwargs")
_EXIT_PARAMS = ("self", "exc_type", "exc_value", "_traceback")
_SHAPES = {
    "call": (Shape(2, _ENTRY_PARAMS, (), FUNCTION),),
    "call_generator": (Shape(2, _ENTRY_PARAMS, (), GENERATOR),),
    "call_async": (Shape(2, _ENTRY_PARAMS, (), COROUTINE),),
    "call_async_generator": (Shape(2, _ENTRY_PARAMS, (), ASYNC_GENERATOR),),
    "__exit__": (
        Shape(4, _EXIT_PARAMS, ("_CircuitBreaker__call_failed", "_last_failure", "is_failure", "reset"), FUNCTION),
    ),
}


class _Verdict(threading.local):
    """The failure the library counted last in this thread: its breaker and its exception."""

    breaker: int = 0
    exc: BaseException | None = None


_VERDICT = _Verdict()


def _state_code(value: Any) -> int | None:
    return _STATES.get(value) if isinstance(value, str) else None


class _Entry:
    """What the replaced ``call`` needs of one breaker, in one lookup."""

    __slots__ = ("binding", "counted", "hot", "local")

    def __init__(self, binding: BreakerBinding, counted: CountedThreadRows) -> None:
        self.binding = binding
        self.counted = counted
        self.local = counted.local
        #: ``hot.fast``: the latency histogram is on and bound to the rows (see BreakerBinding.hot)
        self.hot = binding.hot


def _record_success(entry: _Entry, elapsed: float) -> None:
    """A fast-path success, recorded the Python way (for the compiled path's rare misses)."""
    try:
        record_timed(entry.binding, entry.counted.row(), elapsed, C0)
    except Exception as exc:
        report("recording a circuitbreaker call", exc)


class CircuitbreakerBreakers:
    """Instruments ``circuitbreaker.CircuitBreaker`` and its subclasses."""

    target = "circuitbreaker"

    def __init__(self, session: Session) -> None:
        self.session = session
        # id(breaker) -> entry: the hot path's one lookup; emptied by uninstrument().
        self._by_id: dict[int, _Entry] = {}
        session.fast_lookups.append(self._by_id)
        self._breaker_cls: type | None = None
        self._closed: Any = "closed"

    def start(self) -> None:
        self.session.on_import("circuitbreaker", self._patch, self.target)

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        cls = module.CircuitBreaker
        error = module.CircuitBreakerError
        self._breaker_cls = cls
        self._closed = getattr(module, "STATE_CLOSED", "closed")
        required = [
            (cls, "__init__"),
            (cls, "decorate"),
            (cls, "_CircuitBreaker__call_failed"),
            (error, "__init__"),
        ]
        missing = [
            f"{owner.__qualname__}.{name}"
            for owner, name in required
            if not isinstance(vars(owner).get(name), types.FunctionType)
        ]
        if missing:
            version = version_of("circuitbreaker")
            raise RuntimeError(
                f"circuitbreaker {version} does not have {', '.join(missing)}; it is left uninstrumented"
            )
        checks = [(f"CircuitBreaker.{name}", vars(cls).get(name), shapes) for name, shapes in _SHAPES.items()]
        if not library_matches("circuitbreaker", "circuitbreaker", checks):
            return
        patcher = self.session.patcher
        patcher.replace(cls, "__init__", self._init)
        patcher.replace(cls, "decorate", self._decorate)
        patcher.replace(cls, "_CircuitBreaker__call_failed", self._call_failed)
        patcher.replace(error, "__init__", self._rejected)
        replacements: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
            "call": self._call,
            "call_generator": self._call_generator,
            "call_async": self._call_async,
            "call_async_generator": self._call_async_generator,
        }
        for name, factory in replacements.items():
            patcher.replace(cls, name, factory)
        if existed:
            for breaker in existing_instances(cls):
                if getattr(breaker, "_name", None) is not None:
                    self._guarded_bind(breaker)

    # -- bindings -----------------------------------------------------------------------------------
    def _bind(self, breaker: Any) -> _Entry | None:
        session = self.session
        if not session.breakers_on or not session.active:
            return None
        name = breaker._name
        binding = bind_weakly(
            session.registry,
            session.breakers,
            breaker,
            breaker_label(name),
            lambda b: _state_code(b.state),
            polled=True,
            raw_name=name,
        )
        counted = CountedThreadRows(C0)
        binding.series.attach(binding, counted)
        entry = _Entry(binding, counted)
        keep_by_id(self._by_id, breaker, entry)
        return entry

    def _guarded_bind(self, breaker: Any) -> _Entry | None:
        try:
            return self._bind(breaker)
        except Exception as exc:
            report("binding a circuitbreaker breaker", exc)
            return None

    def entry_of(self, breaker: Any) -> _Entry | None:
        """The breaker's entry, (re)bound if it is new or was renamed; None when not recording."""
        entry = self._by_id.get(id(breaker))
        if entry is None or entry.binding.raw_name is not getattr(breaker, "_name", None):
            entry = self._guarded_bind(breaker)
        return entry

    def _observe(self, breaker: Any, binding: BreakerBinding) -> None:
        code = _state_code(breaker.state)
        if code is not None:
            binding.observe_state(code)

    def _before(self, breaker: Any) -> _Entry | None:
        """An entry method's start off the fast path: bind, and read the state it starts in."""
        try:
            if not self.session.active:
                return None
            entry = self.entry_of(breaker)
            if entry is not None:
                self._observe(breaker, entry.binding)
            return entry
        except Exception as exc:
            report("preparing a circuitbreaker call", exc)
            return None

    def _succeeded(self, breaker: Any, entry: _Entry, start: float, observe: bool) -> None:
        try:
            entry.binding.count(C0, perf_counter() - start)
            if observe:
                self._observe(breaker, entry.binding)
        except Exception as exc:
            report("recording a circuitbreaker call", exc)

    def _raised(self, breaker: Any, entry: _Entry, start: float, exc: BaseException, closed: bool = False) -> None:
        """The guarded block raised: a failure if the library counted one for this exception, else
        a success (the library reset the breaker on it). ``closed``: the call took the fast path,
        so it started closed (a reading the fast path does not make)."""
        try:
            if closed:
                entry.binding.observe_state(CLOSED)
            verdict = _VERDICT
            failed = verdict.breaker == id(breaker) and verdict.exc is exc
            if failed:
                verdict.breaker, verdict.exc = 0, None
            entry.binding.count(C1 if failed else C0, perf_counter() - start)
            self._observe(breaker, entry.binding)
        except Exception as report_exc:
            report("recording a circuitbreaker error", report_exc)

    # -- patches (factories of the replacement functions) ---------------------------------------------
    def _init(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def __init__(breaker: Any, *args: Any, **kwargs: Any) -> None:
            orig(breaker, *args, **kwargs)
            if session.active and getattr(breaker, "_name", None) is not None:
                self._guarded_bind(breaker)

        return __init__

    def _decorate(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def decorate(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            result = orig(breaker, *args, **kwargs)
            if session.active:
                try:
                    self.entry_of(breaker)  # decorate() names an unnamed breaker
                except Exception as exc:  # pragma: no cover - defensive
                    report("binding a circuitbreaker breaker", exc)
            return result

        return decorate

    def _call_failed(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def _CircuitBreaker__call_failed(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = _VERDICT
            verdict.breaker = id(breaker)
            # __exit__ counts a failure while the block's exception is being handled in this
            # thread: that is the exception it judged. The breaker's _last_failure is shared, and
            # other threads' calls overwrite or clear it between __exit__'s two statements.
            handled = sys.exc_info()[1]
            verdict.exc = handled if handled is not None else getattr(breaker, "_last_failure", None)
            return orig(breaker, *args, **kwargs)

        return _CircuitBreaker__call_failed

    def _rejected(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def __init__(error: Any, *args: Any, **kwargs: Any) -> None:
            orig(error, *args, **kwargs)
            circuit_breaker = args[0] if args else kwargs.get("circuit_breaker")
            cls = self._breaker_cls
            if session.active and cls is not None and isinstance(circuit_breaker, cls):
                try:
                    entry = self.entry_of(circuit_breaker)
                    if entry is not None:
                        self._observe(circuit_breaker, entry.binding)
                        entry.binding.count(C2)
                except Exception as exc:
                    report("recording a circuitbreaker rejection", exc)

        return __init__

    def _call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Replaces ``CircuitBreaker.call``: ``with self:`` around ``func``, timed and counted.

        The fast path (a bound breaker that starts closed and succeeds) times the block and bumps
        one histogram; the rest goes through ``_before``/``_raised``/``_succeeded``.
        """
        by_id_get = self._by_id.get
        before = self._before
        raised = self._raised
        succeeded = self._succeeded
        clock = perf_counter
        first_bound = _FIRST_BOUND
        bounds = BOUNDS
        target = self.target
        closed = self._closed

        def call(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry = by_id_get(id(self))
            try:
                fast = entry is not None and self._state is closed
            except AttributeError:
                fast = False
            if not fast:
                entry = before(self)
                if entry is None:
                    with self:
                        return func(*args, **kwargs)
                start = clock()
                result = None  # what the library's ``with self: return ...`` gives when __exit__ suppresses
                try:
                    with self:
                        result = func(*args, **kwargs)
                except BaseException as exc:
                    raised(self, entry, start, exc)
                    raise
                succeeded(self, entry, start, True)
                return result
            start = clock()
            result = None  # what the library's ``with self: return ...`` gives when __exit__ suppresses
            try:
                with self:
                    result = func(*args, **kwargs)
            except BaseException as exc:
                raised(self, entry, start, exc, True)  # type: ignore[arg-type]
                raise
            elapsed = clock() - start
            try:
                try:
                    row: Row = entry.local.row  # type: ignore[union-attr]
                except AttributeError:
                    row = entry.counted.row()  # type: ignore[union-attr]
                if entry.hot.fast:  # type: ignore[union-attr]
                    # A CountedThreadRows row: a timed success is its histogram count.
                    row[SUM] += elapsed
                    if elapsed < row[MIN]:
                        row[MIN] = elapsed
                    if elapsed > row[MAX]:
                        row[MAX] = elapsed
                    row[B0 if elapsed <= first_bound else B0 + bisect_left(bounds, elapsed)] += 1
                else:
                    record_timed(entry.binding, row, elapsed, C0)  # type: ignore[union-attr]
            except Exception as exc:  # pragma: no cover - defensive
                report(f"recording a {target} call", exc)
            return result

        hooks = hot_path.load("circuitbreaker")  # at patch time: tests and the bench switch it
        if hooks is None:
            return call
        # The compiled fast path; it hands every other call to ``call`` above.
        return hot_path.compiled(
            call,
            lambda: hooks.guarded_call(
                slow=named_as(call, orig),
                entries=self._by_id,
                closed=closed,
                raised=raised,
                record=_record_success,
                entry_type=_Entry,
                series_type=Series,
            ),
            "circuitbreaker's CircuitBreaker.call",
        )

    def _call_async(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        by_id_get = self._by_id.get
        before = self._before
        raised = self._raised
        succeeded = self._succeeded
        clock = perf_counter
        closed = self._closed

        async def call_async(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry = by_id_get(id(self))
            try:
                fast = entry is not None and self._state is closed
            except AttributeError:
                fast = False
            if not fast:
                entry = before(self)
                if entry is None:
                    with self:
                        return await func(*args, **kwargs)
            start = clock()
            result = None  # what the library's ``with self: return ...`` gives when __exit__ suppresses
            try:
                with self:
                    result = await func(*args, **kwargs)
            except BaseException as exc:
                raised(self, entry, start, exc, fast)  # type: ignore[arg-type]
                raise
            # A call that started closed and succeeded ends closed: nothing to observe.
            succeeded(self, entry, start, not fast)  # type: ignore[arg-type]
            return result

        return call_async

    def _call_generator(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        before = self._before
        raised = self._raised
        succeeded = self._succeeded
        clock = perf_counter

        def call_generator(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry = before(self)
            if entry is None:
                with self:
                    for el in func(*args, **kwargs):
                        yield el
                return
            start = clock()
            try:
                with self:
                    for el in func(*args, **kwargs):
                        yield el
            except BaseException as exc:
                raised(self, entry, start, exc)
                raise
            succeeded(self, entry, start, True)

        return call_generator

    def _call_async_generator(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        before = self._before
        raised = self._raised
        succeeded = self._succeeded
        clock = perf_counter

        async def call_async_generator(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry = before(self)
            if entry is None:
                with self:
                    async for el in func(*args, **kwargs):
                        yield el
                return
            start = clock()
            try:
                with self:
                    async for el in func(*args, **kwargs):
                        yield el
            except BaseException as exc:
                raised(self, entry, start, exc)
                raise
            succeeded(self, entry, start, True)

        return call_async_generator
