"""Loads each library home's compiled hot paths when they are built, allowed and safe here, and says why not.

A home with compiled hot paths (``libraries.COMPILED``) has an extension module
``otel_trading.instrumentation.<library>._hooks``, built from its ``_hooks.c`` on the shared
header ``_core/hot_path.h``. ``load(library)`` gives it, configured with the row layout and the
ContextVar of OpenTelemetry's current context (a call made while that context holds something, a
span, goes to the hook's pure-Python twin, which records the exemplar), or None: then that
library's instrumentation installs its pure-Python twins.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import types
from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation.libraries import COMPILED
from otel_trading.recording import fast_rows
from otel_trading.recording.exemplars import otel_context_var
from otel_trading.recording.fast_rows import FREE_THREADED as FREE_THREADED
from otel_trading.recording.fast_rows import TURNED_OFF as TURNED_OFF
from otel_trading.recording.rows import B0, BOUNDS, MAX, MIN, SUM

__all__ = ["announce", "compiled", "load", "named_as", "pure_python_reason"]

_logger = logging.getLogger("otel_trading")

NOT_BUILT = (
    "they are not built for this interpreter (no C compiler or Python headers when the package was "
    "installed: install a wheel, or reinstall with them)"
)
SWITCHED_OFF = "the compiled hot paths were switched off in this process"


def _decide() -> str | None:
    """Why no compiled hot path may run in this process; None when they may (one decision, shared
    with the own components' compiled update: ``recording.fast_rows``)."""
    return fast_rows.refused()


#: ``_decide()`` as made once at import, by the recording layer.
_why: str | None = fast_rows.REFUSED
#: Whether instrumentations patched from now on use the compiled hot paths: read by ``load`` when
#: an instrumentation patches, so that setting it to False (as the tests and the bench do) puts
#: later patches on the pure-Python paths. False from the start when this process may not use them.
enabled: bool = _why is None
_announced = threading.Event()
#: library -> (its module, configured; or None and why not), each imported once.
_loaded: dict[str, tuple[types.ModuleType | None, str | None]] = {}


def _load(library: str) -> tuple[types.ModuleType | None, str | None]:
    """``library``'s compiled hooks module, configured with the row layout and OpenTelemetry's
    context variable (resolved now, once per module); or None and why not."""
    found = _loaded.get(library)
    if found is None:
        try:
            module = importlib.import_module(f"otel_trading.instrumentation.{library}._hooks")
        except ImportError as exc:
            found = (None, str(exc))
        else:
            module.configure(BOUNDS, SUM, MIN, MAX, B0, otel_context_var())
            found = (module, None)
        _loaded[library] = found
    return found


def load(library: str) -> types.ModuleType | None:
    """The compiled hooks of ``library`` (``otel_trading.instrumentation.<library>._hooks``), or None
    when its instrumentation is to install its pure-Python twins: the compiled hot paths are off in
    this process (``enabled``), or that module is not built."""
    if not enabled:
        return None
    return _load(library)[0]


def pure_python_reason() -> str | None:
    """Why the library instrumentations run on the pure-Python hot paths; None when compiled (every
    home of ``libraries.COMPILED`` has its module built and loaded)."""
    if not enabled:
        return _why or SWITCHED_OFF
    missing = [why for why in (_load(library)[1] for library in COMPILED) if why is not None]
    return f"{NOT_BUILT}: {'; '.join(missing)}" if missing else None


def announce() -> None:
    """One INFO line per process, when instrumentation starts on the pure-Python hot paths."""
    why = pure_python_reason()
    if why is None or _announced.is_set():
        return
    _announced.set()
    _logger.info(
        "otel-trading: the library instrumentations use their pure-Python hot paths (about 1.3-2.7x a "
        "bare call instead of 1.0-1.3x): %s",
        why,
    )


def named_as(twin: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``twin`` (the pure-Python path a compiled one hands calls to) named as the library's
    ``original``, so that an error binding its arguments names the library's method."""
    return functools.update_wrapper(twin, original)


def compiled(factory: str, twin: Callable[..., Any], **fields: Any) -> Callable[..., Any]:
    """What an instrumentation installs for ``twin``, its pure-Python path (named as the library's
    method it replaces: ``named_as``): the hook ``factory`` (``"<library>.<name>"``: that function of
    the library's compiled module) makes from ``slow=twin`` and ``fields``; or ``twin`` itself, when
    that module is not to be used (``load``, read now: at patch time, as the tests and the bench
    switch it), or when the factory refuses what it is given (a class of ours without a slot its C
    reads, after a rename: a TypeError naming each one), which is reported at instrument time."""
    library, _, name = factory.partition(".")
    hooks = load(library)
    if hooks is None:
        return twin
    try:
        hook: Callable[..., Any] = getattr(hooks, name)(slow=twin, **fields)
    except TypeError as exc:
        where = f"{library}'s {getattr(twin, '__qualname__', name)}"
        report(f"making the compiled hot path of {where} (it runs on its pure-Python twin)", exc)
        return twin
    return hook
