"""The bot's own breaker and event-bus classes, named by configuration (see ``config``).

Breakers: each configured call method is wrapped; a return is a success, an exception listed in
``rejected_exceptions`` a rejection, one in ``excluded_exceptions`` a success, any other
``Exception`` a failure (``BaseException`` such as cancellation counts as nothing). Successes
and failures are timed. The state attribute is read (and mapped through ``states``) before and
after each call and at every collection; a change between two reads is a transition.

Event buses: ``publish`` methods count published events when they return; ``dispatch`` methods
(which run the handlers of one event) count processed events, time them, and count an error
when they raise; ``subscribe``/``unsubscribe`` count subscribers unless a ``subscribers``
mapping is configured, which is then read at collection. A method may be both ``publish`` and
``dispatch`` (a bus that delivers inline). A call nested in another call of the same bus with the
same arguments (``publish`` calling ``publish_nowait``) is counted once.

The classes are patched when their module is imported (immediately if it already is); the
instances are never modified (per-instance state lives in a ``WeakIdentityMap``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
import types
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from otel_trading import metric_contract as mc
from otel_trading.instrumentation._bindings import UNNAMED, BreakerBinding
from otel_trading.instrumentation._session import Session, existing_instances
from otel_trading.instrumentation._support import (
    ArgRef,
    _logger,
    label_of,
    read_path,
    report,
    warn_once,
)
from otel_trading.instrumentation.config import (
    BreakerClassSpec,
    ClassRef,
    EventBusClassSpec,
    InstrumentConfig,
    Scalar,
)
from otel_trading.recording import C0, C1, C2, Binding, MetricsRegistry, Series, ThreadRows, observe
from otel_trading.recording.rows import fork_safe

#: Breakers whose configured call method is running in this thread / task (re-entrant calls
#: such as ``call_async`` delegating to ``call`` count once).
_IN_BREAKER: ContextVar[frozenset[int]] = ContextVar("otel_trading_in_breaker", default=frozenset())
#: Bus calls running in this thread / task: (bus id, role, ids of the arguments).
_IN_BUS: ContextVar[frozenset[tuple[int, str, frozenset[int]]]] = ContextVar(
    "otel_trading_in_bus", default=frozenset()
)
_MISSING = object()


# -- resolution -----------------------------------------------------------------------------------


@dataclass
class Resolved:
    spec: BreakerClassSpec | EventBusClassSpec
    cls: type
    functions: dict[str, types.FunctionType]
    rejected: tuple[type[BaseException], ...] = ()
    excluded: tuple[type[BaseException], ...] = ()
    args: dict[str, ArgRef] = field(default_factory=dict)


def _walk(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve_exceptions(
    refs: tuple[ClassRef, ...], key: str, where: str, problems: list[str]
) -> tuple[type, ...]:
    out: list[type] = []
    for ref in refs:
        try:
            exc_type = _walk(importlib.import_module(ref.module), ref.qualname)
        except Exception as exc:
            problems.append(f"{where}: {key} entry {ref} cannot be found: {exc}")
            continue
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            problems.append(f"{where}: {key} entry {ref} is not an exception class")
            continue
        out.append(exc_type)
    return tuple(out)


def resolve(
    spec: BreakerClassSpec | EventBusClassSpec, module: types.ModuleType
) -> tuple[Resolved | None, list[str]]:
    """Find the class and its methods in the imported ``module``; problems name the entry."""
    problems: list[str] = []
    where = spec.where
    try:
        cls = _walk(module, spec.cls.qualname)
    except AttributeError:
        hint = ""
        if spec.cls.module == "__main__":
            hint = (
                " (classes of the script itself exist only once it has run: move the class into a module, "
                "or call instrument_bot() after the class definition)"
            )
        return None, [f"{where}: module {spec.cls.module!r} has no class {spec.cls.qualname!r}{hint}"]
    if not isinstance(cls, type):
        return None, [f"{where}: {spec.cls} is a {type(cls).__name__}, not a class"]
    if isinstance(spec, BreakerClassSpec):
        methods = {m: "call" for m in spec.calls}
    else:
        methods = {}
        for role in ("unsubscribe", "subscribe", "dispatch", "publish"):
            for m in getattr(spec, role):
                methods[m] = role
    functions: dict[str, types.FunctionType] = {}
    for name, role in methods.items():
        raw = inspect.getattr_static(cls, name, None)
        if raw is None:
            problems.append(f"{where}: class {spec.cls} has no method {name!r} (configured as {role!r})")
        elif not isinstance(raw, types.FunctionType):
            problems.append(
                f"{where}: {spec.cls}.{name} (configured as {role!r}) is a {type(raw).__name__}, "
                "not a plain method defined with def / async def"
            )
        else:
            functions[name] = raw
    resolved = Resolved(spec, cls, functions)
    if isinstance(spec, BreakerClassSpec):
        resolved.rejected = _resolve_exceptions(spec.rejected, "rejected_exceptions", where, problems)
        resolved.excluded = _resolve_exceptions(spec.excluded, "excluded_exceptions", where, problems)
    else:
        for name, function in functions.items():
            try:
                resolved.args[name] = ArgRef.locate(function, spec.event_arg)
            except ValueError as exc:
                problems.append(f"{where}: {spec.cls}.{name} {exc} (event_arg = {spec.event_arg!r})")
    return (None if problems else resolved), problems


def check_imported(config: InstrumentConfig) -> list[str]:
    """Problems of entries whose module is already imported (reported at start-up, before patching)."""
    problems: list[str] = []
    for spec in (*config.breakers, *config.event_buses):
        module = sys.modules.get(spec.cls.module)
        if module is not None:
            problems.extend(resolve(spec, module)[1])
    return problems


# -- state mapping --------------------------------------------------------------------------------


def _matches(candidate: Any, configured: Scalar) -> bool:
    if isinstance(configured, bool) or isinstance(candidate, bool):
        return type(candidate) is bool and candidate is configured
    return bool(candidate == configured)


def state_mapper(states: tuple[tuple[Scalar, int], ...], where: str) -> Callable[[Any], int | None]:
    """Maps a state value to 0/1/2: the value itself, else its ``.name``, else its ``.value`` (enums)."""

    def code(value: Any) -> int | None:
        for candidate in (value, getattr(value, "name", _MISSING), getattr(value, "value", _MISSING)):
            if candidate is _MISSING:
                continue
            for configured, state_code in states:
                if _matches(candidate, configured):
                    return state_code
        warn_once(
            f"unknown-state:{where}:{value!r}",
            "otel-trading instrumentation: %s: state value %r matches none of 'states'; "
            "circuit_breaker_state keeps the last known state",
            where,
            value,
        )
        return None

    return code


# -- bus binding ----------------------------------------------------------------------------------


class BusBinding:
    """One instrumented custom bus, as the registry's queue-size and subscriber gauges see it."""

    __slots__ = (
        "__weakref__",
        "_counted",
        "_lock",
        "_on_dead",
        "_ref",
        "_registry",
        "_spec",
        "_stats",
        "timed",
    )

    def __init__(
        self, registry: MetricsRegistry, spec: EventBusClassSpec, bus: Any, on_dead: Callable[[], None]
    ) -> None:
        self._on_dead = on_dead
        # Weak, as for EventBus: the provider holds its registry, a bus binding must not.
        self._registry = weakref.ref(registry)
        self._spec = spec
        self._ref = weakref.ref(bus)
        self._stats: dict[str, tuple[ThreadRows, Series]] = {}
        self._counted: dict[str, int] = {}
        self._lock = threading.Lock()
        fork_safe(self)
        self.timed = registry.enabled(mc.BUS_PROCESSING_DURATION.key)
        registry.add_bus(self)

    @property
    def name(self) -> str:
        bus = self._ref()
        if bus is None:
            self._on_dead()  # read at collection, outside recording locks: release dead bindings
            return UNNAMED
        try:
            value = read_path(bus, self._spec.name)
        except AttributeError:
            return type(bus).__name__
        return value if isinstance(value, str) and value.strip() else type(bus).__name__

    @property
    def queue_size(self) -> int:
        bus = self._ref()
        if bus is None or self._spec.queue_size is None:
            return 0
        try:
            value = read_path(bus, self._spec.queue_size)
            return value if isinstance(value, int) else len(value)
        except Exception as exc:
            report(f"{self._spec.where}: reading queue_size", exc)
            return 0

    def subscriber_counts(self) -> dict[str, int]:
        if self._spec.subscribers is None:
            return {label: n for label, n in list(self._counted.items()) if n > 0}
        bus = self._ref()
        if bus is None:
            return {}
        try:
            mapping = read_path(bus, self._spec.subscribers)
            counts: dict[str, int] = {}
            for key, handlers in list(mapping.items()):
                label = label_of(key)
                counts[label] = counts.get(label, 0) + (
                    handlers if isinstance(handlers, int) else len(handlers)
                )
            return counts
        except Exception as exc:
            report(f"{self._spec.where}: reading subscribers", exc)
            return {}

    def subscribed(self, label: str, delta: int) -> None:
        with self._lock:
            self._counted[label] = max(0, self._counted.get(label, 0) + delta)

    def _row(self, label: str) -> tuple[list[Any], Series]:
        stats = self._stats.get(label)
        if stats is None:
            with self._lock:
                stats = self._stats.get(label)
                if stats is None:
                    registry = self._registry()
                    if registry is not None:
                        series = registry.event(label)
                    else:  # its provider is gone: count into a series nothing reads
                        series = Series({"event_type": label}, None, Binding.ROWS)
                    rows = ThreadRows()
                    series.attach(self, rows)
                    stats = self._stats[label] = (rows, series)
        return stats[0].row(), stats[1]

    def published(self, label: str) -> None:
        self._row(label)[0][C0] += 1

    def processed(self, label: str, elapsed: float, failed: bool) -> None:
        row, series = self._row(label)
        row[C1] += 1
        if failed:
            row[C2] += 1
        if self.timed:
            if series.fast:
                observe(row, elapsed)
            else:
                series.observe_slow(row, elapsed)


# -- the target ------------------------------------------------------------------------------------


class CustomClasses:
    """Patches the configured classes as their modules are imported."""

    def __init__(self, session: Session, config: InstrumentConfig) -> None:
        self.session = session
        self.config = config

    def start(self) -> None:
        for spec in (*self.config.breakers, *self.config.event_buses):
            self.session.on_import(
                spec.cls.module,
                lambda module, existed, spec=spec: self._patch(spec, module, existed),
                spec.where,
            )

    def _patch(
        self, spec: BreakerClassSpec | EventBusClassSpec, module: types.ModuleType, existed: bool
    ) -> None:
        resolved, problems = resolve(spec, module)
        if resolved is None:
            _logger.error(
                "otel-trading instrumentation: %s is left uninstrumented:\n  - %s",
                spec.where,
                "\n  - ".join(problems),
            )
            return
        patcher = self.session.patcher
        is_breaker = isinstance(spec, BreakerClassSpec)
        if isinstance(inspect.getattr_static(resolved.cls, "__init__", None), types.FunctionType):
            patcher.replace(
                resolved.cls, "__init__", lambda orig: self._init_wrapper(resolved, is_breaker, orig)
            )
        for name in resolved.functions:
            if is_breaker:
                patcher.replace(resolved.cls, name, lambda orig: self._breaker_wrapper(resolved, orig))
            else:
                patcher.replace(
                    resolved.cls, name, lambda orig, name=name: self._bus_wrapper(resolved, name, orig)
                )
        if existed:
            for instance in existing_instances(resolved.cls):
                self._guarded_bind(resolved, instance, is_breaker)

    def _guarded_bind(self, r: Resolved, instance: Any, is_breaker: bool) -> Any:
        try:
            return self._breaker_binding(r, instance) if is_breaker else self._bus_binding(r, instance)
        except Exception as exc:
            report(f"{r.spec.where}: binding an instance", exc)
            return None

    def _init_wrapper(self, r: Resolved, is_breaker: bool, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def __init__(instance: Any, *args: Any, **kwargs: Any) -> None:
            orig(instance, *args, **kwargs)
            if session.active:
                self._guarded_bind(r, instance, is_breaker)

        return __init__

    # -- breakers -----------------------------------------------------------------------------------
    def _breaker_name(self, r: Resolved, breaker: Any) -> str:
        try:
            value = read_path(breaker, r.spec.name)
        except AttributeError:
            return type(breaker).__name__
        return value if isinstance(value, str) and value.strip() else UNNAMED

    def _breaker_binding(self, r: Resolved, breaker: Any) -> BreakerBinding | None:
        session = self.session
        if not session.breakers_on:
            return None
        name = self._breaker_name(r, breaker)
        binding = session.breakers.get(breaker)
        if binding is not None and binding.name == name:
            return binding
        spec = r.spec
        assert isinstance(spec, BreakerClassSpec)
        ref = weakref.ref(breaker)
        mapper = state_mapper(spec.states, spec.where)
        bindings = session.breakers

        def read_state() -> int | None:
            b = ref()
            if b is None:
                bindings.flush()  # at collection, outside recording locks: release dead bindings
                return None
            try:
                value = read_path(b, spec.state)
            except AttributeError:
                return None
            return mapper(value)

        binding = BreakerBinding(session.registry, name, read_state, polled=True, alive=lambda: ref() is not None)
        session.breakers.set(breaker, binding)
        return binding

    def _breaker_before(self, r: Resolved, breaker: Any) -> BreakerBinding | None:
        try:
            binding = self._breaker_binding(r, breaker)
            if binding is not None:
                _ = binding.state  # a transition since the last read (e.g. a timeout) shows up now
            return binding
        except Exception as exc:
            report(f"{r.spec.where}: preparing a call", exc)
            return None

    def _breaker_after(
        self, r: Resolved, binding: BreakerBinding, exc: BaseException | None, elapsed: float
    ) -> None:
        try:
            if exc is None:
                binding.count(C0, elapsed)
            elif r.rejected and isinstance(exc, r.rejected):
                binding.count(C2)
            elif not isinstance(exc, Exception):
                pass  # cancellation / interpreter exit says nothing about the dependency
            elif r.excluded and isinstance(exc, r.excluded):
                binding.count(C0, elapsed)
            else:
                binding.count(C1, elapsed)
            _ = binding.state
        except Exception as report_exc:
            report(f"{r.spec.where}: recording a call", report_exc)

    def _breaker_wrapper(self, r: Resolved, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        is_async = inspect.iscoroutinefunction(orig)

        def sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
            active = _IN_BREAKER.get()
            if not session.active or id(instance) in active:
                return orig(instance, *args, **kwargs)
            binding = self._breaker_before(r, instance)
            if binding is None:
                return orig(instance, *args, **kwargs)
            token = _IN_BREAKER.set(active | {id(instance)})
            start = perf_counter()
            try:
                result = orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._breaker_after(r, binding, exc, perf_counter() - start)
                raise
            finally:
                _IN_BREAKER.reset(token)
            self._breaker_after(r, binding, None, perf_counter() - start)
            return result

        async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
            active = _IN_BREAKER.get()
            if not session.active or id(instance) in active:
                return await orig(instance, *args, **kwargs)
            binding = self._breaker_before(r, instance)
            if binding is None:
                return await orig(instance, *args, **kwargs)
            token = _IN_BREAKER.set(active | {id(instance)})
            start = perf_counter()
            try:
                result = await orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._breaker_after(r, binding, exc, perf_counter() - start)
                raise
            finally:
                _IN_BREAKER.reset(token)
            self._breaker_after(r, binding, None, perf_counter() - start)
            return result

        return coro if is_async else sync

    # -- buses --------------------------------------------------------------------------------------
    def _bus_binding(self, r: Resolved, bus: Any) -> BusBinding | None:
        session = self.session
        if not session.buses_on:
            return None
        binding = session.buses.get(bus)
        if binding is None:
            assert isinstance(r.spec, EventBusClassSpec)
            binding = BusBinding(session.registry, r.spec, bus, session.buses.flush)
            session.buses.set(bus, binding)
        return binding  # type: ignore[no-any-return]

    def _bus_before(
        self,
        r: Resolved,
        method: str,
        roles: frozenset[str],
        bus: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[BusBinding, str, frozenset[str], Any] | None:
        """(binding, label, roles still to count, context token) or None to just call through."""
        try:
            binding = self._bus_binding(r, bus)
            if binding is None:
                return None
            found, value = r.args[method].get(args, kwargs)
            label = label_of(value) if found else "unknown"
            ids = frozenset(map(id, (*args, *kwargs.values())))
            active = _IN_BUS.get()
            todo = frozenset(role for role in roles if (id(bus), role, ids) not in active)
            if not todo:
                return None
            token = _IN_BUS.set(active | {(id(bus), role, ids) for role in todo})
            return binding, label, todo, token
        except Exception as exc:
            report(f"{r.spec.where}: preparing {method}()", exc)
            return None

    def _bus_after(
        self,
        r: Resolved,
        binding: BusBinding,
        label: str,
        roles: frozenset[str],
        exc: BaseException | None,
        elapsed: float,
    ) -> None:
        try:
            if exc is not None and not isinstance(exc, Exception):
                return
            if "dispatch" in roles:
                if "publish" in roles:
                    binding.published(label)
                binding.processed(label, elapsed, exc is not None)
            elif "publish" in roles and exc is None:
                binding.published(label)
        except Exception as report_exc:
            report(f"{r.spec.where}: recording an event", report_exc)

    def _subscription(
        self, r: Resolved, method: str, delta: int, bus: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            binding = self._bus_binding(r, bus)
            if binding is not None and r.spec.subscribers is None:  # type: ignore[union-attr]
                found, value = r.args[method].get(args, kwargs)
                binding.subscribed(label_of(value) if found else "unknown", delta)
        except Exception as exc:
            report(f"{r.spec.where}: counting a subscription", exc)

    def _bus_wrapper(self, r: Resolved, method: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(orig)
        spec = r.spec
        assert isinstance(spec, EventBusClassSpec)
        session = self.session
        roles = frozenset(role for role in ("publish", "dispatch") if method in getattr(spec, role))
        if not roles:
            delta = 1 if method in spec.subscribe else -1

            def sub_sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
                result = orig(instance, *args, **kwargs)
                if session.active:
                    self._subscription(r, method, delta, instance, args, kwargs)
                return result

            async def sub_coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
                result = await orig(instance, *args, **kwargs)
                if session.active:
                    self._subscription(r, method, delta, instance, args, kwargs)
                return result

            return sub_coro if is_async else sub_sync

        def sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
            if not session.active:
                return orig(instance, *args, **kwargs)
            pre = self._bus_before(r, method, roles, instance, args, kwargs)
            if pre is None:
                return orig(instance, *args, **kwargs)
            binding, label, todo, token = pre
            start = perf_counter()
            try:
                result = orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._bus_after(r, binding, label, todo, exc, perf_counter() - start)
                raise
            finally:
                _IN_BUS.reset(token)
            self._bus_after(r, binding, label, todo, None, perf_counter() - start)
            return result

        async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
            if not session.active:
                return await orig(instance, *args, **kwargs)
            pre = self._bus_before(r, method, roles, instance, args, kwargs)
            if pre is None:
                return await orig(instance, *args, **kwargs)
            binding, label, todo, token = pre
            start = perf_counter()
            try:
                result = await orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._bus_after(r, binding, label, todo, exc, perf_counter() - start)
                raise
            finally:
                _IN_BUS.reset(token)
            self._bus_after(r, binding, label, todo, None, perf_counter() - start)
            return result

        return coro if is_async else sync
