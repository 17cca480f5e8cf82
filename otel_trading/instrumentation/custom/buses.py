"""Custom event-bus classes: publish, dispatch and subscribe methods counted and timed."""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from otel_trading import metric_contract as mc
from otel_trading.instrumentation._core.arguments import label_of, read_path
from otel_trading.instrumentation._core.around import around
from otel_trading.instrumentation._core.binding import UNNAMED
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation.config import (
    EventBusClassSpec,
)
from otel_trading.instrumentation.custom.resolve import Resolved
from otel_trading.recording import HANDLER_ERRORS, PROCESSED, PUBLISHED, Binding, MetricsRegistry, Series, ThreadRows
from otel_trading.recording.rows import fork_safe

__all__ = ["BusBinding", "CustomBusWrappers"]

#: Bus calls running in this thread / task: (bus id, role, ids of the arguments).
_IN_BUS: ContextVar[frozenset[tuple[int, str, frozenset[int]]]] = ContextVar("otel_trading_in_bus", default=frozenset())


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
        excluded = self._spec.exclude_events
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
                if label in excluded:
                    continue
                counts[label] = counts.get(label, 0) + (handlers if isinstance(handlers, int) else len(handlers))
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
        self._row(label)[0][PUBLISHED] += 1

    def processed(self, label: str, elapsed: float, failed: bool) -> None:
        row, series = self._row(label)
        row[PROCESSED] += 1
        if failed:
            row[HANDLER_ERRORS] += 1
        if self.timed:
            series.observe(row, elapsed)


class CustomBusWrappers:
    """The event-bus half of ``CustomClasses``: bindings and the publish/dispatch/subscribe wrappers."""

    session: Session

    def _bus_binding(self, r: Resolved, bus: Any) -> BusBinding | None:
        session = self.session
        if not session.buses_on:
            return None
        binding = session.buses.get(bus)
        if binding is None:
            assert isinstance(r.spec, EventBusClassSpec)
            binding = BusBinding(session.registry, r.spec, bus, session.buses.flush)
            session.buses.set(bus, binding)
        return binding

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
            if label in r.spec.exclude_events:  # type: ignore[union-attr]
                return None  # one of the library's own events
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
                label = label_of(value) if found else "unknown"
                if label not in r.spec.exclude_events:  # type: ignore[union-attr]
                    binding.subscribed(label, delta)
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

        def begin(
            instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[BusBinding, str, frozenset[str], Any] | None:
            return self._bus_before(r, method, roles, instance, args, kwargs) if session.active else None

        def end(
            started: tuple[BusBinding, str, frozenset[str], Any], exc: BaseException | None, elapsed: float
        ) -> None:
            binding, label, todo, token = started
            _IN_BUS.reset(token)
            self._bus_after(r, binding, label, todo, exc, elapsed)

        return around(orig, begin, end)
