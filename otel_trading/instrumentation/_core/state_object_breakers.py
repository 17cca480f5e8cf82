"""Breakers that delegate to state objects: all breaker metrics, read from the library's own decision points.

Libraries of this design (a breaker object holding a state object per state: closed, open,
half-open, each with ``call``) share this adapter; each home describes its names in a ``Family``.
The wrapped functions are the places where the library itself decides an outcome, so the counts
are the library's own, never re-derived:

======================================  ==========================================================
``CircuitBreaker.__init__``             bind the new breaker (labelled by ``name``)
``CircuitBreaker._create_new_state``    with ``notify=True`` and a different state: a transition
``<base state>.call`` / ``call_async``  the guarded call: timed here; a normal return is a success
                                        the library counted (it ran ``_handle_success``)
``<base state>._handle_error``          the call raised: the library decides below whether that is
``CircuitBreaker._inc_counter``         a failure (it counts one) or an excluded error (a success)
``<base state>.generator_call``         generator calls (``with breaker.calling():``) finish here
``CircuitOpenState.before_call``        raising the library's ``CircuitBreakerError`` without
                                        having tried a half-open trial: a rejected call
======================================  ==========================================================

The success path costs one wrapper frame: the call wrapper times the call and counts the success
inline. Error paths leave a per-thread verdict (which breaker's error the library handled, and
whether it counted a failure) that the call wrapper reads as the exception passes.

No listener is added and no attribute is set on a breaker: ``listeners``, state, counters and
storage are exactly what the library keeps. Breakers created before instrumentation are found
(``gc``) and bound when the library was already imported, else on their first call. The state
gauge reads ``current_state`` (the storage: with a Redis storage one read per breaker per
collection, which the library itself may answer by re-creating a missing key), never the ``state``
property (which may change the state). A
``call_async`` that returns a future (Tornado) is counted and timed when the future completes (a
failed half-open trial there is not counted as a failure).
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import types
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.arguments import kwarg_or_arg
from otel_trading.instrumentation._core.binding import (
    BreakerBinding,
    record_timed,
)
from otel_trading.instrumentation._core.hot_path import named_as
from otel_trading.instrumentation._core.identity import keep_by_id
from otel_trading.instrumentation._core.reliance import (
    Attribute,
    Function,
    Reliance,
    Shape,
    interpreter,
    shape_differences,
    version_of,
)
from otel_trading.instrumentation._core.reporting import report, warn_once
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.recording import FAILURES, REJECTED, SUCCESSES, Row, Series, observe
from otel_trading.recording.exemplars import current_context

__all__ = ["Classes", "Family", "LibraryBreakers", "state_object_reliance"]


_CALL = ("self", "func", "args", "kwargs")


def state_object_reliance(
    library: str,
    class_paths: tuple[str, str, str, str],
    functions: tuple[Function, ...] = (),
    attributes: tuple[Attribute, ...] = (),
) -> Reliance:
    """What this adapter relies on in a library of this design (its breaker, base state, open state
    and error at ``class_paths``, "module:Class"), plus what the home's own names add."""
    breaker, state, open_state, error = class_paths
    return Reliance(
        library,
        functions=(
            Function(f"{breaker}.__init__"),
            # A transition: (new_state, prev_state, notify) by position or keyword.
            Function(f"{breaker}._create_new_state", params=("self", "new_state", "prev_state", "notify")),
            # The verdict's failure: the library counts one.
            Function(f"{breaker}._inc_counter", params=("self",)),
            Function(f"{state}.generator_call", params=("self", "wrapped_generator")),
            Function(f"{state}.call_async", params=_CALL),
            # A rejection: before_call raises without replacing the state (no half-open trial ran).
            Function(f"{open_state}.before_call", params=_CALL),
            *functions,
        ),
        attributes=(
            Attribute(error),
            Attribute(f"{breaker}._name", set_by=("__init__",)),
            Attribute(f"{breaker}._state", set_by=("__init__",)),
            Attribute(f"{breaker}.current_state"),
            Attribute(f"{breaker}.name"),
            Attribute(f"{state}._breaker", set_by=("__init__",)),
            *attributes,
        ),
    )


@dataclass(frozen=True)
class Classes:
    breaker: type
    base_state: type
    open_state: type
    error: type[BaseException]


@dataclass(frozen=True)
class Family:
    """How one library names things; the adapter below is the same for all."""

    #: the library (its top-level module and distribution)
    target: str
    #: ``"module:Class"`` of its breaker, base state, open state and error
    class_paths: tuple[str, str, str, str]
    #: a state's name -> 0/1/2
    states: Mapping[str, int]
    #: the state name in ``breaker.current_state`` (what the storage holds), and in a state object
    #: (``prev_state``, the result of ``_create_new_state``)
    state_name: Callable[[Any], Any]
    state_object_name: Callable[[Any], Any]
    #: everything of the library the adapter relies on (checked before anything is patched)
    reliance: Reliance
    #: The shape (see ``_core.reliance``) of the library's ``CircuitBreaker.call`` when it is exactly
    #: "under ``_lock``, return ``self.state.call(...)``": then that method is replaced by one doing
    #: the same plus the recording (no extra frame on the hot path), compiled when the home's
    #: ``_hooks`` module is built (its ``locked_call``). Otherwise the state's ``call`` is wrapped.
    locked_call: Shape | None = None

    def classes(self) -> Classes:
        found = []
        for path in self.class_paths:
            module, _, name = path.partition(":")
            found.append(getattr(sys.modules[module], name))
        return Classes(*found)

    def state_code(self, current: Any) -> int | None:
        name = self.state_name(current)
        return self.states.get(name) if isinstance(name, str) else None

    def state_object_code(self, state: Any) -> int | None:
        name = self.state_object_name(state)
        return self.states.get(name) if isinstance(name, str) else None


class _Verdict(threading.local):
    """What the library decided about the last guarded call that raised in this thread."""

    breaker: int = 0
    failed: bool = False


_VERDICT = _Verdict()


def _take_verdict(breaker: Any) -> bool | None:
    """True: the library counted a failure; False: a success (an excluded error); None: ``breaker``
    never ran the guarded function (rejected, or a listener raised first)."""
    verdict = _VERDICT
    if verdict.breaker != id(breaker):
        return None
    verdict.breaker = 0
    return verdict.failed


class LibraryBreakers:
    """Instruments one library of this design."""

    def __init__(self, session: Session, family: Family) -> None:
        self.session = session
        self.family = family
        # id(breaker) -> binding: the call wrapper's one lookup. Entries leave with their breaker,
        # and all of them with uninstrument() (so the wrapper need not test session.active).
        self._by_id: dict[int, BreakerBinding] = {}
        session.fast_lookups.append(self._by_id)
        # breaker._lock -> binding, for the replaced ``CircuitBreaker.call`` (see _locked_call).
        self._by_lock: dict[Any, BreakerBinding] = {}
        session.fast_lookups.append(self._by_lock)
        self._locked = False
        self._guarded_bind = session.guarded(f"binding a {family.target} breaker", self._bind)

    def start(self) -> None:
        self.session.on_import(self.family.target, self._patch, self.family.target)

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        if not self.family.reliance.holds():
            return
        c = self.family.classes()
        replace: list[tuple[type, str, Callable[[types.FunctionType], Callable[..., Any]]]] = [
            (c.breaker, "__init__", self.session.after_init(self._guarded_bind)),
            (c.breaker, "_create_new_state", self._new_state),
            (c.breaker, "_inc_counter", self._failure),
            (c.base_state, "_handle_error", self._handle_error),
            (c.open_state, "before_call", self._open_before_call),
        ]
        locked_call = self.family.locked_call
        breaker_call = inspect.getattr_static(c.breaker, "call", None)
        name_property = inspect.getattr_static(c.breaker, "name", None)
        differs = None
        if locked_call is not None:
            differs = shape_differences(breaker_call, (locked_call,), "CircuitBreaker.call")
        self._locked = (
            locked_call is not None
            and differs is None
            and isinstance(name_property, property)
            and name_property.fset is not None
        )
        if locked_call is not None and not self._locked:
            warn_once(
                f"pure-python:{self.family.target}",
                "otel-trading instrumentation: %s %s on %s: %s; its calls take the pure-Python hot path",
                self.family.target,
                version_of(self.family.target),
                interpreter(),
                differs or "CircuitBreaker.name has no setter",
                level=logging.INFO,
            )
        if self._locked:
            self._open_state = c.open_state
            replace.append((c.breaker, "call", self._locked_call))
        else:
            replace.append((c.base_state, "call", self._call))
        call_async = inspect.getattr_static(c.base_state, "call_async", None)
        if inspect.iscoroutinefunction(call_async):
            replace.append((c.base_state, "call_async", self._call_async))
        elif isinstance(call_async, types.FunctionType):
            replace.append((c.base_state, "call_async", self._call_future))
        wrap = [(c.base_state, "generator_call", self._generator_call)]
        self._error = c.error
        patcher = self.session.patcher
        for owner, name, factory in replace:
            patcher.replace(owner, name, factory)
        for owner, name, wrapper in wrap:
            # wrapt keeps ``inspect.isgeneratorfunction`` true; generator calls are rare.
            patcher.wrap(owner, name, wrapper)
        if self._locked:
            # The replaced call() looks bindings up by lock, without re-reading the name: a
            # rename rebinds here instead.
            patcher.replace_setter(c.breaker, "name", self._renamed)
        if existed:
            for breaker in existing_instances(c.breaker):
                self._guarded_bind(breaker)

    # -- bindings -----------------------------------------------------------------------------------
    def _bind(self, breaker: Any) -> BreakerBinding | None:
        state_code = self.family.state_code
        binding = self.session.bind_breaker(breaker, breaker._name, lambda b: state_code(b.current_state))
        if binding is None:
            return None
        if keep_by_id(self._by_id, breaker, binding) and self._locked:
            weakref.finalize(breaker, self._by_lock.pop, breaker._lock, None)
        if self._locked:
            binding.exclusive_row()
            self._by_lock[breaker._lock] = binding
        return binding

    def binding_of(self, breaker: Any) -> BreakerBinding | None:
        """The breaker's binding, (re)bound if it is new or was renamed; None when not recording."""
        binding = self._by_id.get(id(breaker))
        if binding is None or binding.raw_name is not breaker._name:
            binding = self._guarded_bind(breaker)
        return binding

    def _record(self, breaker: Any, column: int, elapsed: float | None) -> None:
        try:
            binding = self.binding_of(breaker)
        except Exception as exc:  # pragma: no cover - defensive
            report(f"recording a {self.family.target} call", exc)
            return
        if binding is not None:
            self._record_with(binding, column, elapsed)

    def _record_with(self, binding: BreakerBinding, column: int, elapsed: float | None) -> None:
        try:
            binding.count(column, elapsed)
        except Exception as exc:
            report(f"recording a {self.family.target} call", exc)

    def _after_error(self, breaker: Any, start: float) -> None:
        try:
            failed = _take_verdict(breaker)
            if failed is not None:
                self._record(breaker, FAILURES if failed else SUCCESSES, perf_counter() - start)
        except Exception as exc:  # pragma: no cover - defensive
            report(f"recording a {self.family.target} error", exc)

    # -- patches (factories of the replacement functions) --------------------------------------------
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
                        binding = self.binding_of(breaker)
                        if binding is not None:
                            binding.transition(old, new)
                except Exception as exc:
                    report(f"recording a {family.target} transition", exc)
            return result

        return _create_new_state

    def _handle_error(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def _handle_error(state: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = _VERDICT
            verdict.breaker = id(state._breaker)
            verdict.failed = False
            return orig(state, *args, **kwargs)

        return _handle_error

    def _failure(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def _inc_counter(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = _VERDICT
            if verdict.breaker == id(breaker):
                verdict.failed = True
            return orig(breaker, *args, **kwargs)

        return _inc_counter

    def _call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps the state's ``call`` (where ``CircuitBreaker.call`` is not the locked one)."""
        by_id_get = self._by_id.get

        def call(state: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = state._breaker
            binding = by_id_get(id(breaker))
            if binding is None or binding.raw_name is not breaker._name:
                # New or renamed: (re)bind and take the path above; not recording: call through.
                if self.session.active and self.binding_of(breaker) is not None:
                    return call(state, *args, **kwargs)
                return orig(state, *args, **kwargs)
            start = perf_counter()
            try:
                result = orig(state, *args, **kwargs)
            except BaseException:
                self._after_error(breaker, start)
                raise
            if result.__class__ is not types.GeneratorType:  # a generator's outcome comes at its end
                self._record_with(binding, SUCCESSES, perf_counter() - start)
            return result

        return call

    def _locked_call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """``CircuitBreaker.call`` as the library writes it, plus timing and counting under its lock."""
        session = self.session
        after_error = self._after_error
        generator = types.GeneratorType
        clock = perf_counter
        target = self.family.target
        open_state: Any = self._open_state
        by_lock = self._by_lock
        binding_of = self.binding_of
        record_exclusive = self._record_exclusive

        def call(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:  # the library's parameter names
            breaker = self
            lock = breaker._lock
            binding = by_lock.get(lock)
            if binding is None:
                if session.active and binding_of(breaker) is not None:
                    return call(breaker, func, *args, **kwargs)
                return orig(breaker, func, *args, **kwargs)
            with lock:
                state: Any = breaker.state
                if state.__class__ is open_state:
                    # A rejection (counted by before_call), or a half-open trial that runs through
                    # this wrapper again and is counted there.
                    return state.call(func, *args, **kwargs)
                start = clock()
                try:
                    result = state.call(func, *args, **kwargs)
                except BaseException:
                    after_error(breaker, start)
                    raise
                if result.__class__ is generator:  # a generator's outcome comes at its end
                    return result
                elapsed = clock() - start
                try:
                    # The exclusive row is a CountedRow: a timed success is its histogram count.
                    row: Row = binding.exclusive  # type: ignore[assignment]  # set by _bind in this mode
                    if binding.hot.fast:
                        observe(row, elapsed)
                        if current_context():  # a span (or another value) is current: an exemplar candidate
                            binding.hot.offer_exemplar(elapsed)
                    else:
                        record_timed(binding, row, elapsed, SUCCESSES)
                except Exception as exc:  # pragma: no cover - defensive
                    report(f"recording a {target} call", exc)
                return result

        # The compiled fast path of ``call`` above (which it hands calls of unbound breakers to).
        return hot_path.compiled(
            f"{target}.locked_call",
            named_as(call, orig),
            bindings=by_lock,
            open_state=open_state,
            after_error=after_error,
            record=record_exclusive,
            generator=generator,
            binding_type=BreakerBinding,
            series_type=Series,
        )

    def _record_exclusive(self, binding: BreakerBinding, elapsed: float) -> None:
        """A success of the compiled ``call`` on a series not bound to its rows (or a row it could not update)."""
        try:
            record_timed(binding, binding.exclusive, elapsed, SUCCESSES)  # type: ignore[arg-type]  # set by _bind
        except Exception as exc:
            report(f"recording a {self.family.target} call", exc)

    def _renamed(self, orig: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def name(breaker: Any, value: Any) -> None:
            orig(breaker, value)
            if self.session.active and id(breaker) in self._by_id:
                self._guarded_bind(breaker)

        return name

    def _call_async(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        async def call_async(state: Any, *args: Any, **kwargs: Any) -> Any:
            breaker = getattr(state, "_breaker", None)
            if not session.active or breaker is None:
                return await orig(state, *args, **kwargs)
            start = perf_counter()
            try:
                result = await orig(state, *args, **kwargs)
            except BaseException:
                self._after_error(breaker, start)
                raise
            self._record(breaker, SUCCESSES, perf_counter() - start)
            return result

        return call_async

    def _call_future(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """A Tornado ``call_async``: returns a future; the outcome is known when it is done."""
        session = self.session

        def call_async(state: Any, *args: Any, **kwargs: Any) -> Any:
            future = orig(state, *args, **kwargs)
            breaker = getattr(state, "_breaker", None)
            if session.active and breaker is not None and hasattr(future, "add_done_callback"):
                start = perf_counter()
                try:
                    future.add_done_callback(lambda f: self._future_done(breaker, f, start))
                except Exception as exc:  # pragma: no cover - defensive
                    report(f"timing a {self.family.target} Tornado call", exc)
            return future

        return call_async

    def _future_done(self, breaker: Any, future: Any, start: float) -> None:
        try:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is None:
                self._record(breaker, SUCCESSES, perf_counter() - start)
            elif not isinstance(exc, self._error):
                # Decided by the library's own predicate. Its CircuitBreakerError is a rejection
                # (counted by before_call) or a failed trial, which this path does not count.
                self._record(breaker, FAILURES if breaker.is_system_error(exc) else SUCCESSES, perf_counter() - start)
        except Exception as exc:
            report(f"recording a {self.family.target} Tornado call", exc)

    def _generator_call(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        gen = wrapped(*args, **kwargs)
        breaker = getattr(instance, "_breaker", None)
        if not self.session.active or breaker is None or not isinstance(gen, types.GeneratorType):
            return gen
        return self._relay(gen, breaker, perf_counter())

    def _relay(self, gen: Generator[Any, Any, Any], breaker: Any, start: float) -> Generator[Any, Any, Any]:
        """``yield from gen``, then count its outcome as the library decided it."""
        try:
            result = yield from gen
        except BaseException:
            self._after_error(breaker, start)
            raise
        self._record(breaker, SUCCESSES, perf_counter() - start)
        return result

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
                # (a library may run the trial inside before_call; its failure replaces the state).
                if session.active and getattr(breaker, "_state", None) is before:
                    self._record(breaker, REJECTED, None)
                raise

        return before_call
