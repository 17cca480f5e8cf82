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

import inspect
import types
from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core.reporting import _logger, report
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.instrumentation.config import (
    BreakerClassSpec,
    EventBusClassSpec,
    InstrumentConfig,
)
from otel_trading.instrumentation.custom.breakers import CustomBreakerWrappers
from otel_trading.instrumentation.custom.buses import BusBinding, CustomBusWrappers
from otel_trading.instrumentation.custom.resolve import (
    Resolved,
    check_imported,
    missing_modules,
    resolve,
    without_unresolvable,
)

__all__ = ["BusBinding", "CustomClasses", "check_imported", "missing_modules", "without_unresolvable"]


class CustomClasses(CustomBreakerWrappers, CustomBusWrappers):
    """Patches the configured classes as their modules are imported."""

    def __init__(self, session: Session, config: InstrumentConfig) -> None:
        self.session = session
        self.config = config

    def start(self) -> None:
        specs: list[BreakerClassSpec | EventBusClassSpec] = [*self.config.breakers, *self.config.event_buses]
        for spec in specs:
            self.session.on_import(spec.cls.module, self._patcher_for(spec), spec.where)

    def _patcher_for(self, spec: BreakerClassSpec | EventBusClassSpec) -> Callable[[types.ModuleType, bool], None]:
        def patch(module: types.ModuleType, existed: bool) -> None:
            self._patch(spec, module, existed)

        return patch

    def _patch(self, spec: BreakerClassSpec | EventBusClassSpec, module: types.ModuleType, existed: bool) -> None:
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
            patcher.replace(resolved.cls, "__init__", lambda orig: self._init_wrapper(resolved, is_breaker, orig))
        for name in resolved.functions:
            if is_breaker:
                patcher.replace(resolved.cls, name, self._breaker_wrapper_for(resolved, name))
            else:
                patcher.replace(resolved.cls, name, self._bus_wrapper_for(resolved, name))
        if existed:
            for instance in existing_instances(resolved.cls):
                self._guarded_bind(resolved, instance, is_breaker)

    def _bus_wrapper_for(self, r: Resolved, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def factory(orig: Callable[..., Any]) -> Callable[..., Any]:
            return self._bus_wrapper(r, method, orig)

        return factory

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
