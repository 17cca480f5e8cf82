"""Auto-instrumentation of an existing bot: its circuit breakers and event bus, with no code change.

``TradingInstrumentor`` is an OpenTelemetry ``BaseInstrumentor`` registered under the
``opentelemetry_instrumentor`` entry point (name ``otel_trading``), so

    OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py

exports the monitoring guide's metrics. ``instrument_bot()`` does the same from one call at
start-up, and also starts the metrics endpoint (``configure_metrics()``) when no meter provider is
set. Targets, each can be switched off by naming it in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``
(``otel_trading`` switches off all of them):

================================  ================================================================
``otel_trading.<library>``        each library of ``libraries.LIBRARIES``: its home package
                                  ``otel_trading.instrumentation.<library>``
``otel_trading.components``       otel-trading's own ``CircuitBreaker`` and ``EventBus``
``otel_trading.custom``           the bot's own classes named by configuration (see ``config``)
================================  ================================================================

Each library target is also an instrumentor of its own, the contrib way (in its home): its
own entry point (``otel_trading_pybreaker``, ``otel_trading_circuitbreaker``, ...; that name in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` switches it off too) and its own supported version range,
checked before anything is patched. ``TradingInstrumentor`` delegates to them and undoes what it
delegated on ``uninstrument()``.

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

try:
    import opentelemetry.instrumentation.instrumentor  # noqa: F401
    import wrapt  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"otel_trading.instrumentation needs the 'instrumentation' extra ({exc.name} is not installed): "
        "pip install 'otel-trading[instrumentation]'",
        name=exc.name,
    ) from exc

from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import MeterProvider

from otel_trading.exporting import ConfigurationError, MetricsHandle, configure_metrics
from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.instrumentor import LibraryInstrumentor, disabled_names, library_instrumentors
from otel_trading.instrumentation._core.session import Session, one_scan
from otel_trading.instrumentation.components import OwnComponents
from otel_trading.instrumentation.config import InstrumentConfig, InstrumentConfigurationError, load_config
from otel_trading.instrumentation.custom import CustomClasses, missing_modules, without_unresolvable
from otel_trading.recording import global_provider_is_set
from otel_trading.settings import near_miss, warn_about_otel_env

__all__ = [
    "ENTRY_POINT_NAME",
    "LIBRARY_TARGETS",
    "TARGETS",
    "BotInstrumentation",
    "ConfigurationError",
    "InstrumentConfig",
    "InstrumentConfigurationError",
    "LibraryInstrumentor",
    "TradingInstrumentor",
    "compiled_hot_paths",
    "disabled_target_warnings",
    "disabled_targets",
    "fast_path_counts",
    "instrument_bot",
    "load_config",
    "pure_python_reason",
]

_logger = logging.getLogger(__name__)

#: The entry point name, as ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` knows it.
ENTRY_POINT_NAME = "otel_trading"
#: Every library home's instrumentor (see ``libraries``), in the order the umbrella delegates to them.
LIBRARY_INSTRUMENTORS: tuple[type[LibraryInstrumentor], ...] = library_instrumentors()
#: The library targets, each also an instrumentor with its own entry point ``otel_trading_<target>``.
LIBRARY_TARGETS: tuple[str, ...] = tuple(cls.target for cls in LIBRARY_INSTRUMENTORS)
TARGETS: tuple[str, ...] = (*LIBRARY_TARGETS, "components", "custom")


def disabled_targets(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Targets off by ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (all for ``otel_trading`` or ``*``;
    a library target by ``otel_trading.<target>`` or by its entry point ``otel_trading_<target>``)."""
    names = set(disabled_names(environ))
    if ENTRY_POINT_NAME in names or "*" in names:
        return frozenset(TARGETS)
    return frozenset(
        t
        for t in TARGETS
        if f"{ENTRY_POINT_NAME}.{t}" in names or (t in LIBRARY_TARGETS and f"{ENTRY_POINT_NAME}_{t}" in names)
    )


def disabled_target_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` entries meant for otel-trading that name nothing."""
    names = disabled_names(environ)
    known = [
        ENTRY_POINT_NAME,
        *(f"{ENTRY_POINT_NAME}.{t}" for t in TARGETS),
        *(cls.entry_point_name() for cls in LIBRARY_INSTRUMENTORS),
    ]
    warnings: list[str] = []
    for name in names:
        if name in known or name == "*":
            continue
        close = near_miss(name, known, max_edits=3)
        if name.startswith(f"{ENTRY_POINT_NAME}.") or close is not None:
            hint = f"did you mean {close}? " if close is not None else ""
            warnings.append(
                f"{OTEL_PYTHON_DISABLED_INSTRUMENTATIONS}: {name!r} names no otel-trading instrumentation, so "
                f"nothing is switched off by it: {hint}known: {', '.join(known)}"
            )
    return warnings


class TradingInstrumentor(BaseInstrumentor):
    """Instruments the libraries (delegating to their own instrumentors), otel-trading's own
    components and configured bot classes.

    ``instrument(meter_provider=None, config=None)``: ``meter_provider`` defaults to the global
    one; ``config`` (a mapping or a TOML/JSON path) overrides ``OTEL_TRADING_INSTRUMENT`` and the
    ``pyproject.toml`` section. An invalid ``config=`` raises ``ConfigurationError`` listing every
    problem, before anything is patched. A configuration from ``OTEL_TRADING_INSTRUMENT`` or
    ``pyproject.toml`` never stops instrumentation: each bad entry is left out and reported once,
    in one ERROR log record without a traceback (``opentelemetry-instrument`` would print a raised
    error twice, inside two tracebacks, and instrument nothing of otel-trading).
    """

    _session: Session | None = None
    #: The library instrumentors this one instrumented (and so uninstruments).
    _delegated: tuple[LibraryInstrumentor, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        # Every target is optional and detected at import time: nothing is required. Each
        # library target checks its own range (see _instrumentors).
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        meter_provider: MeterProvider | None = kwargs.get("meter_provider")
        warn_about_otel_env(_logger)
        for warning in disabled_target_warnings():
            _logger.warning("otel-trading: %s", warning)
        disabled = disabled_targets()
        config = InstrumentConfig(source="disabled")
        if "custom" not in disabled:
            config = self._custom_config(kwargs.get("config"))
        session = Session(meter_provider)
        targets: list[Any] = []
        if "components" not in disabled:
            targets.append(OwnComponents(session))
        if "custom" not in disabled and not config.empty:
            targets.append(CustomClasses(session, config))
        delegated: list[LibraryInstrumentor] = []
        try:
            with one_scan():  # one look at the live objects for every target
                for cls in LIBRARY_INSTRUMENTORS:
                    library = cls()
                    if cls.target in disabled or library.is_instrumented_by_opentelemetry:
                        continue  # off, or instrumented on its own (its entry point, or the app)
                    library.instrument(meter_provider=meter_provider)
                    if library.is_instrumented_by_opentelemetry:  # not skipped (version range, not installed)
                        delegated.append(library)
                for target in targets:
                    target.start()
        except BaseException:
            session.stop()
            for library in delegated:
                library.uninstrument()
            raise
        self._session = session
        self._delegated = tuple(delegated)
        _logger.debug(
            "otel-trading instrumentation active (disabled targets: %s; custom classes from %s)",
            ", ".join(sorted(disabled)) or "none",
            config.source,
        )

    @staticmethod
    def _custom_config(explicit: Mapping[str, Any] | str | os.PathLike[str] | None) -> InstrumentConfig:
        """The bot's own classes to instrument: strict for ``config=``, lenient from the environment."""
        strict = explicit is not None
        config = load_config(explicit, strict=strict)
        config, unresolved = without_unresolvable(config)
        if strict and unresolved:
            raise InstrumentConfigurationError(unresolved)
        problems = [*config.problems, *unresolved]
        if problems:
            _logger.error(
                "otel-trading instrumentation: %d configuration problem(s); the entries named are left "
                "uninstrumented, everything else is instrumented:\n  - %s",
                len(problems),
                "\n  - ".join(problems),
            )
        for warning in missing_modules(config):
            _logger.warning("otel-trading instrumentation: %s", warning)
        return config

    def _uninstrument(self, **kwargs: Any) -> None:
        session, self._session = self._session, None
        delegated, self._delegated = self._delegated, ()
        if session is not None:
            session.stop()
        for library in delegated:
            if library.is_instrumented_by_opentelemetry:
                library.uninstrument()

    @property
    def patched(self) -> list[tuple[type, str]]:
        """(class, attribute) pairs currently wrapped (its own and its delegates'), for diagnostics and tests."""
        own = self._session.patcher.patched if self._session is not None else []
        return [*own, *(pair for library in self._delegated for pair in library.patched)]


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


def __getattr__(name: str) -> type[LibraryInstrumentor]:
    # The library instrumentors by class name (``PybreakerInstrumentor``), as before their homes.
    for cls in LIBRARY_INSTRUMENTORS:
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compiled_hot_paths() -> bool:
    """True when the library instrumentations run on their compiled hot paths; False when on the
    pure-Python ones (not built, ``OTEL_TRADING_PURE_PYTHON=true``, or a free-threaded interpreter:
    ``pure_python_reason()`` says which)."""
    return hot_path.pure_python_reason() is None


def pure_python_reason() -> str | None:
    """Why the library instrumentations run on their pure-Python hot paths; None when compiled."""
    return hot_path.pure_python_reason()


def fast_path_counts() -> dict[str, dict[str, tuple[int, int]]]:
    """How the compiled hooks installed now have been taking their fast path:
    ``{library: {"Class.method": (hits, misses)}}``, hits being the calls a hook served itself and
    misses the calls it handed to its pure-Python twin (a library's first call in a thread, an
    unusual call, one of a breaker that is not closed, one made while OpenTelemetry's context holds
    a span, whose duration the twin records with its exemplar, ...). A library instrumented on the
    pure-Python hot paths, or not instrumented, has no entry. Each hook counts from when it was installed; the
    counts are plain integers kept under the GIL, so reading them costs nothing on the hot paths."""
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for cls in LIBRARY_INSTRUMENTORS:
        for owner, name in cls().patched:
            found = getattr(vars(owner).get(name), "fast_path_counts", None)
            if isinstance(found, tuple):
                counts.setdefault(cls.target, {})[f"{owner.__qualname__}.{name}"] = found
    return counts
