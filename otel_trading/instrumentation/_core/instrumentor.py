"""The base of every library's instrumentor, the contrib way: own version range, own entry point.

Each library home's instrumentor is a ``BaseInstrumentor registered under the ``opentelemetry_instrumentor``
entry-point group with its own name (``otel_trading_<library>``), so ``opentelemetry-instrument``
loads each one on its own and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_trading_<library>`` skips
just that one. ``TradingInstrumentor`` (entry point ``otel_trading``) is the umbrella that
``instrument_bot()`` uses: it instruments otel-trading's own components and the bot's configured
classes, and delegates every library target to these.

``instrument()`` checks the installed library against ``instrumentation_dependencies()`` itself,
also when the auto-instrumentation loader passes ``skip_dep_check=True``: the loader can only check
a distribution's ``instruments`` extra, which is shared by every entry point of otel-trading, so it
cannot tell one target's range from another's. A library that is not installed is skipped with a
DEBUG line, one outside the range with an ERROR line naming both (as the loader does for contrib
instrumentations); ``instrument()`` never raises into the bot or the loader (an exception there
would stop ``opentelemetry-instrument`` from loading every instrumentor after it).

Disabled by ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` naming ``otel_trading`` (everything),
``otel_trading_<library>`` (the entry point) or ``otel_trading.<library>`` (the umbrella's
target name, kept from before the split).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Protocol

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import MeterProvider

from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session, one_scan
from otel_trading.instrumentation.libraries import LIBRARIES

__all__ = [
    "UMBRELLA_NAME",
    "LibraryInstrumentor",
    "Target",
    "disabled_names",
    "library_disabled",
    "library_instrumentors",
]

_logger = logging.getLogger("otel_trading.instrumentation")

#: The umbrella's entry point name; naming it in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS disables all.
UMBRELLA_NAME = "otel_trading"
_REPORTED_CONFLICTS: dict[tuple[str, str, str], None] = {}


def disabled_names(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The names listed in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, in order, each once."""
    env = os.environ if environ is None else environ
    return tuple(
        dict.fromkeys(n.strip() for n in env.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",") if n.strip())
    )


def library_disabled(target: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a library target is off: ``*``, ``otel_trading``, ``otel_trading_<t>`` or ``otel_trading.<t>``."""
    names = set(disabled_names(environ))
    return bool(names & {"*", UMBRELLA_NAME, f"{UMBRELLA_NAME}_{target}", f"{UMBRELLA_NAME}.{target}"})


class Target(Protocol):
    """What an instrumentor starts: patches it installs now, or when the bot imports the library."""

    def start(self) -> None: ...


class LibraryInstrumentor(BaseInstrumentor):
    """One target library: ``instrument(meter_provider=None)`` / ``uninstrument()``.

    A library's home (the package ``otel_trading.instrumentation.<library>``) subclasses it with
    the targets its hooks build: ``class PyeeInstrumentor(LibraryInstrumentor, targets=(...,))``.
    The subclass's ``target`` is the home's name and ``_instruments`` its ``package.py``'s.
    """

    #: The library's name, as in ``otel_trading.<target>`` and the entry point ``otel_trading_<target>``.
    target: ClassVar[str]
    #: Its supported versions (requirement specifiers, from its home's ``package.py``).
    _instruments: ClassVar[tuple[str, ...]]
    #: What ``instrument()`` starts: each is called with the session.
    _target_factories: ClassVar[tuple[Callable[[Session], Target], ...]] = ()
    _session: Session | None = None

    def __init_subclass__(cls, *, targets: tuple[Callable[[Session], Target], ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        home = cls.__module__
        cls.target = home.rpartition(".")[2]
        cls._instruments = tuple(importlib.import_module(f"{home}.package")._instruments)
        cls._target_factories = targets

    @classmethod
    def entry_point_name(cls) -> str:
        return f"{UMBRELLA_NAME}_{cls.target}"

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def _targets(self, session: Session) -> list[Target]:
        return [factory(session) for factory in self._target_factories]

    def instrument(self, **kwargs: Any) -> Any:
        if self.is_instrumented_by_opentelemetry:
            # Typically: the umbrella instrumented it, then opentelemetry-instrument loads its entry point.
            _logger.debug("otel-trading: %s is already instrumented", self.entry_point_name())
            return None
        if library_disabled(self.target):
            _logger.debug("otel-trading: %s disabled by %s", self.target, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)
            return None
        kwargs.pop("raise_exception_on_conflict", None)
        kwargs["skip_dep_check"] = True
        try:
            conflict = get_dependency_conflicts(self._instruments)
            if conflict is not None:
                key = (self.target, str(conflict.required), str(conflict.found))
                # Once per process: the umbrella and the loader both ask.
                first, _REPORTED_CONFLICTS[key] = key not in _REPORTED_CONFLICTS, None
                if conflict.found and first:
                    _logger.error(
                        "otel-trading: %s instruments %s, but %s is installed; %s is left uninstrumented",
                        self.entry_point_name(),
                        conflict.required,
                        conflict.found,
                        self.target,
                    )
                else:
                    _logger.debug("otel-trading: %s is not installed; nothing to instrument", self.target)
                return None
            return super().instrument(**kwargs)
        except Exception as exc:
            report(f"instrumenting {self.target}", exc)
            return None

    def _instrument(self, **kwargs: Any) -> None:
        meter_provider: MeterProvider | None = kwargs.get("meter_provider")
        hot_path.announce()
        session = Session(meter_provider)
        try:
            with one_scan():
                for target in self._targets(session):
                    target.start()
        except Exception:
            session.stop()
            raise
        self._session = session

    def _uninstrument(self, **kwargs: Any) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.stop()

    @property
    def patched(self) -> list[tuple[type, str]]:
        """(class, attribute) pairs currently wrapped, for diagnostics and tests."""
        return self._session.patcher.patched if self._session is not None else []


def library_instrumentors() -> tuple[type[LibraryInstrumentor], ...]:
    """Every library home's instrumentor (``<Name>Instrumentor`` in ``otel_trading.instrumentation.<name>``),
    in the order of ``libraries.LIBRARIES``."""
    found = []
    for name in LIBRARIES:
        home = importlib.import_module(f"otel_trading.instrumentation.{name}")
        cls = getattr(home, f"{name.capitalize()}Instrumentor")
        if not (isinstance(cls, type) and issubclass(cls, LibraryInstrumentor) and cls.target == name):
            raise TypeError(f"otel_trading.instrumentation.{name} has no LibraryInstrumentor for {name!r}")
        found.append(cls)
    return tuple(found)
