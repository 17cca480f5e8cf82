"""One ``instrument()`` .. ``uninstrument()`` lifetime: its patches, import hooks and bindings.

Every wrapper checks ``session.active`` first, so a wrapper that survives ``uninstrument()`` (a
bound method the bot kept, a wrapper re-wrapped by other code) does nothing but call through.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider

from otel_trading import metric_contract as mc
from otel_trading.instrumentation._core.binding import BreakerBinding, bind_weakly, breaker_label
from otel_trading.instrumentation._core.identity import WeakIdentityMap
from otel_trading.instrumentation._core.patching import ImportWatcher, Patcher
from otel_trading.instrumentation._core.reporting import report, reset_reports
from otel_trading.recording import MetricsRegistry, registry_for

__all__ = ["Session", "existing_instances", "one_scan"]

T = TypeVar("T")


class _Scan(threading.local):
    depth = 0
    #: The live objects by type, listed once per scope.
    by_type: dict[type, list[Any]] | None = None


_SCAN = _Scan()


@contextlib.contextmanager
def one_scan() -> Iterator[None]:
    """Within it, ``existing_instances`` lists the live objects once (``gc.get_objects()`` costs
    tens of milliseconds in a large process, and one ``instrument()`` looks for several classes)."""
    scan = _SCAN
    scan.depth += 1
    try:
        yield
    finally:
        scan.depth -= 1
        if scan.depth == 0:
            scan.by_type = None


def existing_instances(cls: type) -> list[Any]:
    """Live instances of ``cls`` (and subclasses) created before instrumentation."""
    scan = _SCAN
    if not scan.depth:
        return [obj for obj in gc.get_objects() if issubclass(type(obj), cls)]
    by_type = scan.by_type
    if by_type is None:
        by_type = scan.by_type = {}
        for obj in gc.get_objects():
            kind = type(obj)
            found = by_type.get(kind)
            if found is None:
                by_type[kind] = [obj]
            else:
                found.append(obj)
    return [obj for kind, objs in list(by_type.items()) if issubclass(kind, cls) for obj in objs]


class Session:
    """What one ``instrument()`` call set up, undone by ``stop()``."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        reset_reports()
        self.meter_provider = meter_provider
        self.registry: MetricsRegistry = registry_for(meter_provider)
        self.breakers_on = self.registry.group_enabled(mc.MetricGroup.BREAKER)
        self.buses_on = self.registry.group_enabled(mc.MetricGroup.EVENT_BUS)
        self.patcher = Patcher()
        self.watcher = ImportWatcher()
        self.breakers: WeakIdentityMap[BreakerBinding] = WeakIdentityMap()
        self.buses: WeakIdentityMap[Any] = WeakIdentityMap()
        self.active = True
        #: Lookup tables hot paths consult instead of testing ``active``: emptied by ``stop()``.
        self.fast_lookups: list[dict[Any, Any]] = []
        #: Called by ``stop()`` after the patches are undone (what the tables above cannot express).
        self.on_stop: list[Callable[[], object]] = []

    def on_import(self, module: str, patch: Callable[[types.ModuleType, bool], None], what: str) -> None:
        """Run ``patch(module, existed_before)`` now if imported, else when the bot imports it."""
        existed = module in sys.modules

        def run(mod: types.ModuleType) -> None:
            if not self.active:
                return
            try:
                patch(mod, existed)
            except Exception as exc:
                report(f"instrumenting {what}", exc)

        self.watcher.when_imported(module, run)

    def bind_breaker(
        self, breaker: Any, name: object, state_of: Callable[[Any], int | None], *, polled: bool = False
    ) -> BreakerBinding | None:
        """A binding for a library's ``breaker`` named ``name`` (as the library holds it), kept beside
        it; None when breaker metrics are off or the session has stopped."""
        if not self.breakers_on or not self.active:
            return None
        return bind_weakly(
            self.registry, self.breakers, breaker, breaker_label(name), state_of, polled=polled, raw_name=name
        )

    def guarded(self, site: str, function: Callable[[Any], T]) -> Callable[[Any], T | None]:
        """``function(obj)``, with a failure reported (once per ``site``) and None instead of raised."""

        def call(obj: Any) -> T | None:
            try:
                return function(obj)
            except Exception as exc:
                report(site, exc)
                return None

        return call

    def after_init(self, then: Callable[[Any], object]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A ``Patcher.replace`` factory for a library class's ``__init__``: the library's own, then
        ``then(instance)`` while recording (``then`` must not raise: see ``guarded``)."""

        def factory(orig: Callable[..., Any]) -> Callable[..., Any]:
            def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
                orig(obj, *args, **kwargs)
                if self.active:
                    then(obj)

            return __init__

        return factory

    def stop(self) -> None:
        self.active = False
        self.watcher.close()
        self.patcher.restore()
        self.breakers.clear()
        self.buses.clear()
        for table in self.fast_lookups:
            table.clear()
        for callback in self.on_stop:
            try:
                callback()
            except Exception as exc:  # pragma: no cover - defensive
                report("stopping the instrumentation", exc)
