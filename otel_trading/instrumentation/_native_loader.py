"""Loads the compiled hot paths (``_native``) when they are built and not turned off."""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable
from typing import Any

from otel_trading.recording.rows import B0, BOUNDS, MAX, MIN, SUM
from otel_trading.settings import pure_python_from_env

__all__ = ["named_as", "native"]

_logger = logging.getLogger("otel_trading")


def _load() -> types.ModuleType | None:
    try:
        if pure_python_from_env():
            return None
    except ValueError as exc:
        _logger.warning("otel-trading: %s; using the compiled hot paths", exc)
    try:
        from otel_trading.instrumentation import _native
    except ImportError:
        # Not built (no C compiler at install, or another Python implementation): the pure-Python
        # twins do the same work, slower; compiled_hot_paths() says which is in use.
        _logger.info("otel-trading: the compiled hot paths are not built; the library instrumentations use pure Python")
        return None
    _native.configure(BOUNDS, SUM, MIN, MAX, B0)
    return _native


#: The ``_native`` module, or None when the pure-Python hot paths are in use
#: (not built, or ``OTEL_TRADING_PURE_PYTHON=true``). Read when an instrumentation patches, so that
#: setting it to None (as the tests and the bench do) puts later patches on the pure-Python paths.
native: types.ModuleType | None = _load()


def named_as(twin: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``twin`` (the pure-Python path a compiled one hands calls to) named as the library's
    ``original``, so that an error binding its arguments names the library's method."""
    return functools.update_wrapper(twin, original)
