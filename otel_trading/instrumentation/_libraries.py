"""pybreaker and aiobreaker: all breaker metrics, read from the libraries' own decision points.

Both libraries share one design (a breaker delegating to state objects), so one adapter serves
both. The wrapped functions are the places where the library itself decides an outcome, so the
counts are the library's own, never re-derived:

======================================  ==========================================================
``CircuitBreaker.__init__``             bind the new breaker (labelled by ``name``)
``CircuitBreaker._create_new_state``    with ``notify=True`` and a different state: a transition
``CircuitBreaker._inc_counter``         the library counted a failure
``<base state>._handle_success``        the library counted a success (excluded errors included)
``<base state>.call`` / ``call_async``  the guarded function runs here: start of the latency
``<base state>.generator_call``         generator calls (``with breaker.calling():``) finish here
``CircuitOpenState.before_call``        raising the library's ``CircuitBreakerError`` without
                                        having tried a half-open trial: a rejected call
======================================  ==========================================================

No listener is added and no attribute is set on a breaker: ``listeners``, state, counters and
storage are exactly what the library keeps. Breakers created before instrumentation are found
(``gc``) and bound when the library was already imported, else on their first event. The state
gauge reads ``current_state`` (the storage, no side effect), never the ``state`` property.
pybreaker's Tornado ``call_async`` is counted but not timed.
"""

from __future__ import annotations

import inspect
import sys
import types
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._bindings import CLOSED, HALF_OPEN, OPEN, BreakerBinding, breaker_label
from otel_trading.instrumentation._session import CALLS, Session, call_start, existing_instances
from otel_trading.instrumentation._support import kwarg_or_arg, report
from otel_trading.recording import C0, C1, C2

_PYBREAKER_STATES = {"closed": CLOSED, "open": OPEN, "half-open": HALF_OPEN}
_AIOBREAKER_STATES = {"CLOSED": CLOSED, "OPEN": OPEN, "HALF_OPEN": HALF_OPEN}


@dataclass(frozen=True)
class Classes:
    breaker: type
    base_state: type
    open_state: type
    error: type[BaseException]


@dataclass(frozen=True)
class Family:
    """How one library names things; the adapter below is the same for all."""

    target: str
    module: str
    classes: Callable[[types.ModuleType], Classes]
    #: ``breaker.current_state`` (what the storage holds) -> 0/1/2
    state_code: Callable[[Any], int | None]
    #: a state object (``prev_state``, the result of ``_create_new_state``) -> 0/1/2
    state_object_code: Callable[[Any], int | None]


def _pybreaker_classes(module: types.ModuleType) -> Classes:
    return Classes(
        module.CircuitBreaker, module.CircuitBreakerState, module.CircuitOpenState, module.CircuitBreakerError
    )


def _aiobreaker_classes(module: types.ModuleType) -> Classes:
    state = sys.modules["aiobreaker.state"]
    return Classes(
        module.CircuitBreaker,
        state.CircuitBreakerBaseState,
        state.CircuitOpenState,
        state.CircuitBreakerError,
    )


def _py_code(value: Any) -> int | None:
    return _PYBREAKER_STATES.get(value) if isinstance(value, str) else None


def _aio_code(value: Any) -> int | None:
    name = getattr(value, "name", None)
    return _AIOBREAKER_STATES.get(name) if isinstance(name, str) else None


PYBREAKER = Family(
    target="pybreaker",
    module="pybreaker",
    classes=_pybreaker_classes,
    state_code=_py_code,
    state_object_code=lambda state: _py_code(getattr(state, "name", None)),
)
AIOBREAKER = Family(
    target="aiobreaker",
    module="aiobreaker",
    classes=_aiobreaker_classes,
    state_code=_aio_code,
    state_object_code=lambda state: _aio_code(getattr(state, "state", None)),
)


def _relay(gen: Generator[Any, Any, Any], entry: tuple[int, float]) -> Generator[Any, Any, Any]:
    """``yield from gen``, with this breaker's call marked as running while ``gen`` runs."""
    send: Any = None
    thrown: BaseException | None = None
    while True:
        saved = CALLS.get()
        CALLS.set((*saved, entry))
        try:
            if thrown is None:
                yielded = gen.send(send)
            else:
                exc, thrown = thrown, None
                yielded = gen.throw(exc)
        except StopIteration as stop:
            return stop.value
        finally:
            CALLS.set(saved)
        try:
            send = yield yielded
        except GeneratorExit:
            saved = CALLS.get()
            CALLS.set((*saved, entry))
            try:
                gen.close()
            finally:
                CALLS.set(saved)
            raise
        except BaseException as exc:
            thrown = exc


class LibraryBreakers:
    """Instruments one pybreaker-style library."""

    def __init__(self, session: Session, family: Family) -> None:
        self.session = session
        self.family = family

    def start(self) -> None:
        self.session.on_import(self.family.module, self._patch, self.family.target)

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        c = self.family.classes(module)
        replace: list[tuple[type, str, Callable[[types.FunctionType], Callable[..., Any]]]] = [
            (c.breaker, "__init__", self._init),
            (c.breaker, "_create_new_state", self._new_state),
            (c.breaker, "_inc_counter", self._failure),
            (c.base_state, "_handle_success", self._success),
            (c.base_state, "call", self._call),
            (c.open_state, "before_call", self._open_before_call),
        ]
        call_async = inspect.getattr_static(c.base_state, "call_async", None)
        if inspect.iscoroutinefunction(call_async):
            replace.append((c.base_state, "call_async", self._call_async))
        wrap = [(c.base_state, "generator_call", self._generator_call)]
        missing = [
            f"{owner.__qualname__}.{name}"
            for owner, name, _ in (*replace, *wrap)
            if not isinstance(inspect.getattr_static(owner, name, None), types.FunctionType)
        ]
        if missing:
            version = getattr(module, "__version__", "?")
            raise RuntimeError(
                f"{self.family.target} {version} does not have {', '.join(missing)}; "
                f"{self.family.target} is left uninstrumented"
            )
        self._error = c.error
        patcher = self.session.patcher
        for owner, name, factory in replace:
            patcher.replace(owner, name, factory)
        for owner, name, wrapper in wrap:
            # wrapt keeps ``inspect.isgeneratorfunction`` true; generator calls are rare.
            patcher.wrap(owner, name, wrapper)
        if existed:
            for breaker in existing_instances(c.breaker):
                self._guarded_bind(breaker)

    # -- bindings -----------------------------------------------------------------------------------
    def _bind(self, breaker: Any) -> BreakerBinding | None:
        session = self.session
        if not session.breakers_on:
            return None
        ref = weakref.ref(breaker)
        state_code = self.family.state_code
        bindings = session.breakers

        def read_state() -> int | None:
            b = ref()
            if b is None:
                bindings.flush()  # at collection, outside recording locks: release dead bindings
                return None
            return state_code(b.current_state)

        name = breaker.name
        binding = BreakerBinding(
            session.registry, breaker_label(name), read_state, raw_name=name, alive=lambda: ref() is not None
        )
        bindings.set(breaker, binding)
        return binding

    def _guarded_bind(self, breaker: Any) -> None:
        try:
            self._bind(breaker)
        except Exception as exc:
            report(f"binding a {self.family.target} breaker", exc)

    def _record(self, breaker: Any, column: int, timed: bool) -> None:
        try:
            binding = self.session.breakers.get(breaker)
            name = breaker.name
            if binding is None or (binding.raw_name is not name and binding.raw_name != name):
                # Not bound yet (created before instrumentation), or renamed since: (re)bind.
                binding = self._bind(breaker)
                if binding is None:
                    return
            start = call_start(breaker) if timed else None
            binding.count(column, None if start is None else perf_counter() - start)
        except Exception as exc:
            report(f"recording a {self.family.target} call", exc)

    # -- patches (factories of the replacement functions) --------------------------------------------
    def _init(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def __init__(breaker: Any, *args: Any, **kwargs: Any) -> None:
            orig(breaker, *args, **kwargs)
            if session.active:
                self._guarded_bind(breaker)

        return __init__

    def _new_state(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        family = self.family

        def _create_new_state(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            result = orig(breaker, *args, **kwargs)
            if session.active and kwarg_or_arg(args, kwargs, 2, "notify", False):
                try:
                    prev = kwarg_or_arg(args, kwargs, 1, "prev_state", None)
                    old = family.state_object_code(prev) if prev is not None else None
                    new = family.state_object_code(result)
                    if old is not None and new is not None and old != new:
                        binding = session.breakers.get(breaker) or self._bind(breaker)
                        if binding is not None:
                            binding.transition(old, new)
                except Exception as exc:
                    report(f"recording a {family.target} transition", exc)
            return result

        return _create_new_state

    def _failure(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def _inc_counter(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            if session.active:
                self._record(breaker, C1, True)
            return orig(breaker, *args, **kwargs)

        return _inc_counter

    def _success(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def _handle_success(state: Any, *args: Any, **kwargs: Any) -> Any:
            if session.active:
                breaker = getattr(state, "_breaker", None)
                if breaker is not None:
                    self._record(breaker, C0, True)
            return orig(state, *args, **kwargs)

        return _handle_success

    def _call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def call(state: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = getattr(state, "_breaker", None)
            if not session.active or breaker is None:
                return orig(state, *args, **kwargs)
            saved = CALLS.get()
            CALLS.set((*saved, (id(breaker), perf_counter())))
            try:
                return orig(state, *args, **kwargs)
            finally:
                CALLS.set(saved)

        return call

    def _call_async(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        async def call_async(state: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = getattr(state, "_breaker", None)
            if not session.active or breaker is None:
                return await orig(state, *args, **kwargs)
            saved = CALLS.get()
            CALLS.set((*saved, (id(breaker), perf_counter())))
            try:
                return await orig(state, *args, **kwargs)
            finally:
                CALLS.set(saved)

        return call_async

    def _generator_call(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        gen = wrapped(*args, **kwargs)
        breaker = getattr(instance, "_breaker", None)
        if not self.session.active or breaker is None or not isinstance(gen, types.GeneratorType):
            return gen
        start = call_start(breaker)
        return _relay(gen, (id(breaker), perf_counter() if start is None else start))

    def _open_before_call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def before_call(state: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = getattr(state, "_breaker", None)
            if not session.active or breaker is None:
                return orig(state, *args, **kwargs)
            before = getattr(breaker, "_state", None)
            try:
                return orig(state, *args, **kwargs)
            except self._error:
                # Still the same state object: no half-open trial ran, so the call was rejected
                # (pybreaker runs the trial inside before_call; its failure replaces the state).
                if session.active and getattr(breaker, "_state", None) is before:
                    self._record(breaker, C2, False)
                raise

        return before_call
