"""Loads the compiled hot paths (``_native``) when they are built, allowed and safe here, and says why not."""

from __future__ import annotations

import functools
import logging
import sysconfig
import threading
import types
from collections.abc import Callable
from typing import Any

from otel_trading.recording.rows import B0, BOUNDS, MAX, MIN, SUM
from otel_trading.settings import OTEL_TRADING_PURE_PYTHON, pure_python_from_env

__all__ = ["announce", "named_as", "native", "pure_python_reason"]

_logger = logging.getLogger("otel_trading")

NOT_BUILT = (
    "they are not built for this interpreter (no C compiler or Python headers when the package was "
    "installed: install a wheel, or reinstall with them)"
)
TURNED_OFF = f"{OTEL_TRADING_PURE_PYTHON}=true turned them off"
FREE_THREADED = "this is a free-threaded interpreter, where they are not proven safe (they rely on the GIL)"


def _decide() -> tuple[types.ModuleType | None, str | None]:
    """The ``_native`` module, or None and why the pure-Python twins are used instead."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None, FREE_THREADED
    try:
        if pure_python_from_env():
            return None, TURNED_OFF
    except ValueError as exc:
        _logger.warning("otel-trading: %s; using the compiled hot paths", exc)
    try:
        from otel_trading.instrumentation import _native
    except ImportError as exc:
        return None, f"{NOT_BUILT}: {exc}"
    _native.configure(BOUNDS, SUM, MIN, MAX, B0)
    return _native, None


native: types.ModuleType | None
_why: str | None
#: The ``_native`` module, or None when the pure-Python hot paths are in use. Read when an
#: instrumentation patches, so that setting it to None (as the tests and the bench do) puts later
#: patches on the pure-Python paths.
native, _why = _decide()
_announced = threading.Event()


def pure_python_reason() -> str | None:
    """Why the library instrumentations run on the pure-Python hot paths; None when compiled."""
    if native is not None:
        return None
    return _why or "the compiled hot paths were switched off in this process"


def announce() -> None:
    """One INFO line per process, when instrumentation starts on the pure-Python hot paths."""
    why = pure_python_reason()
    if why is None or _announced.is_set():
        return
    _announced.set()
    _logger.info(
        "otel-trading: the library instrumentations use their pure-Python hot paths (about 1.3-2.3x a "
        "bare call instead of 1.0-1.3x): %s",
        why,
    )


def named_as(twin: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``twin`` (the pure-Python path a compiled one hands calls to) named as the library's
    ``original``, so that an error binding its arguments names the library's method."""
    return functools.update_wrapper(twin, original)
