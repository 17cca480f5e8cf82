"""otel-trading's own ``CircuitBreaker`` and ``EventBus`` under the instrumentor.

They record by themselves; what the instrumentor adds is at construction only (their hot paths
are untouched): a component built without ``metrics_enabled`` records even if that default ever
changes, and one built without ``meter_provider`` records into the instrumentor's
``meter_provider`` when ``instrument(meter_provider=...)`` was given one. An explicit
``metrics_enabled=False`` or ``meter_provider=`` from the bot always wins. ``uninstrument()``
restores both constructors; components built meanwhile keep the provider they were built with.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session

__all__ = ["OwnComponents"]

_TARGETS = (
    ("otel_trading.circuit_breaker", "CircuitBreaker"),
    ("otel_trading.event_bus", "EventBus"),
)


class OwnComponents:
    def __init__(self, session: Session) -> None:
        self.session = session

    def start(self) -> None:
        for module, cls_name in _TARGETS:
            self.session.on_import(module, self._patcher_for(cls_name), f"otel_trading.{cls_name}")

    def _patcher_for(self, cls_name: str) -> Callable[[types.ModuleType, bool], None]:
        def patch(module: types.ModuleType, existed: bool) -> None:
            self.session.patcher.replace(getattr(module, cls_name), "__init__", self._init)

        return patch

    def _init(self, orig: Callable[..., None]) -> Callable[..., None]:
        session = self.session

        def __init__(component: Any, *args: Any, **kwargs: Any) -> None:
            if session.active:
                try:
                    kwargs = self._defaults(kwargs)
                except Exception as exc:  # pragma: no cover - defensive
                    report("filling otel-trading component defaults", exc)
            orig(component, *args, **kwargs)

        return __init__

    def _defaults(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        provider = self.session.meter_provider
        wants_provider = provider is not None and kwargs.get("meter_provider") is None
        if "metrics_enabled" in kwargs and not wants_provider:
            return kwargs
        filled = dict(kwargs)
        filled.setdefault("metrics_enabled", True)
        if wants_provider:
            filled["meter_provider"] = provider
        return filled
