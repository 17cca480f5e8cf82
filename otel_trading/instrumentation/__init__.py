"""Auto-instrumentation of an existing bot: its circuit breakers and event bus, with no code change.

``TradingInstrumentor`` is an OpenTelemetry ``BaseInstrumentor`` registered under the
``opentelemetry_instrumentor`` entry point (name ``otel_trading``), so

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

exports the monitoring guide's metrics. ``instrument_bot()`` does the same from one call at
start-up, and also starts the metrics endpoint (``configure_metrics()``) when no meter provider is
set. Targets, each can be switched off by naming it in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
(``otel_trading`` switches off all of them):

=============================  ===================================================================
``otel_trading.pybreaker``     ``pybreaker.CircuitBreaker`` (see ``_libraries``)
``otel_trading.aiobreaker``    ``aiobreaker.CircuitBreaker``
``otel_trading.components``    otel-trading's own ``CircuitBreaker`` and ``EventBus`` (see ``_components``)
``otel_trading.custom``        the bot's own classes named by configuration (see ``config``)
=============================  ===================================================================

Instrumentation is invisible to the instrumented code: wrappers call through unchanged (same
arguments, return values, exceptions), nothing is added to instances, and an exception inside
instrumentation code is logged, never raised into the bot (the one visible trace: a traceback
through a patched method shows one extra wrapper frame). ``uninstrument()`` puts back every
patched class attribute exactly.

Durations take the fast path on every SDK meter provider, including the one
``opentelemetry-instrument`` builds without otel-trading's views (see ``otel_trading.recording``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import MeterProvider

from otel_trading.exporting import ConfigurationError, MetricsHandle, configure_metrics
from otel_trading.instrumentation._components import OwnComponents
from otel_trading.instrumentation._custom import CustomClasses, check_imported
from otel_trading.instrumentation._libraries import AIOBREAKER, PYBREAKER, LibraryBreakers
from otel_trading.instrumentation._session import Session
from otel_trading.instrumentation.config import InstrumentConfig, InstrumentConfigurationError, load_config
from otel_trading.recording import global_provider_is_set

__all__ = [
    "ENTRY_POINT_NAME",
    "TARGETS",
    "BotInstrumentation",
    "ConfigurationError",
    "InstrumentConfig",
    "InstrumentConfigurationError",
    "TradingInstrumentor",
    "disabled_targets",
    "instrument_bot",
    "load_config",
]

_logger = logging.getLogger(__name__)

#: The entry point name, as ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` knows it.
ENTRY_POINT_NAME = "otel_trading"
TARGETS: tuple[str, ...] = ("pybreaker", "aiobreaker", "components", "custom")


def disabled_targets(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Targets off by ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (all for ``otel_trading`` or ``*``)."""
    env = os.environ if environ is None else environ
    names = {n.strip() for n in env.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",") if n.strip()}
    if ENTRY_POINT_NAME in names or "*" in names:
        return frozenset(TARGETS)
    return frozenset(t for t in TARGETS if f"{ENTRY_POINT_NAME}.{t}" in names)


class TradingInstrumentor(BaseInstrumentor):
    """Instruments pybreaker, aiobreaker, otel-trading's own components and configured bot classes.

    ``instrument(meter_provider=None, config=None)``: ``meter_provider`` defaults to the global
    one; ``config`` (a mapping or a TOML/JSON path) overrides ``OTEL_TRADING_INSTRUMENT`` and the
    ``pyproject.toml`` section. An invalid configuration raises ``ConfigurationError`` listing every
    problem, before anything is patched.
    """

    _session: Session | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        # Every target is optional and detected at import time: nothing is required.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        meter_provider: MeterProvider | None = kwargs.get("meter_provider")
        disabled = disabled_targets()
        config = InstrumentConfig(source="disabled")
        if "custom" not in disabled:
            config = load_config(kwargs.get("config"))
            problems = check_imported(config)
            if problems:
                raise InstrumentConfigurationError(problems)
        session = Session(meter_provider)
        targets: list[Any] = []
        if "pybreaker" not in disabled:
            targets.append(LibraryBreakers(session, PYBREAKER))
        if "aiobreaker" not in disabled:
            targets.append(LibraryBreakers(session, AIOBREAKER))
        if "components" not in disabled:
            targets.append(OwnComponents(session))
        if "custom" not in disabled and not config.empty:
            targets.append(CustomClasses(session, config))
        try:
            for target in targets:
                target.start()
        except BaseException:
            session.stop()
            raise
        self._session = session
        _logger.debug(
            "otel-trading instrumentation active (disabled targets: %s; custom classes from %s)",
            ", ".join(sorted(disabled)) or "none",
            config.source,
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.stop()

    @property
    def patched(self) -> list[tuple[type, str]]:
        """(class, attribute) pairs currently wrapped, for diagnostics and tests."""
        return self._session.patcher.patched if self._session is not None else []


@dataclass
class BotInstrumentation:
    """What ``instrument_bot()`` set up; ``close()`` uninstruments and stops the exporter it started."""

    instrumentor: TradingInstrumentor | None
    metrics: MetricsHandle | None

    def close(self) -> None:
        if self.instrumentor is not None and self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()
        if self.metrics is not None:
            self.metrics.shutdown()

    def __enter__(self) -> BotInstrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def instrument_bot(
    meter_provider: MeterProvider | None = None,
    *,
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    start_exporter: bool = True,
) -> BotInstrumentation:
    """The one call at start-up: metrics for the bot's breakers and event bus, exported.

    Without ``meter_provider`` and with no global provider set yet, ``configure_metrics()`` builds
    one from the standard OTel variables (default: a Prometheus endpoint on 127.0.0.1:8000, with
    otel-trading's fast histogram views) unless ``start_exporter=False``. Honours
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` like ``opentelemetry-instrument`` does.
    """
    if disabled_targets() == frozenset(TARGETS):
        _logger.info("otel-trading instrumentation disabled by %s", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)
        return BotInstrumentation(None, None)
    instrumentor = TradingInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        # Typically the bot also runs under opentelemetry-instrument: nothing more to do, and
        # nothing for close() to undo.
        _logger.info("otel-trading instrumentation is already active; instrument_bot() does nothing")
        return BotInstrumentation(None, None)
    handle: MetricsHandle | None = None
    if meter_provider is None and start_exporter and not global_provider_is_set():
        handle = configure_metrics()
    try:
        instrumentor.instrument(meter_provider=meter_provider, config=config)
    except BaseException:
        if handle is not None:
            handle.shutdown()
        raise
    return BotInstrumentation(instrumentor, handle)
