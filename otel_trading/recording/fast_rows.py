"""The own components' compiled histogram update (``_fast_rows``), loaded when built and allowed here.

``record(row, value)`` adds a duration to a row's histogram columns and says whether OpenTelemetry's
current context holds something (True: offer an exemplar), in one C call; it returns None when
``row`` is not a row of the layout (record it in Python). ``record`` is None when the module is not
built, ``OTEL_TRADING_PURE_PYTHON=true`` turned the compiled paths off, the interpreter is
free-threaded, or OpenTelemetry's runtime context is not the contextvars one: the components then
keep their inline Python. The same decision governs the library hooks (``refused``).
``record_exponential(row, value)`` is its twin for rows that keep exponential buckets too
(``Series.observe_slow``); it is None exactly when ``record`` is.
"""

from __future__ import annotations

import logging
import sysconfig
from collections.abc import Callable
from typing import Any

from otel_trading.recording.exemplars import otel_context_var
from otel_trading.recording.exponential import E_COUNTS, E_FACTOR, E_HI, E_LO, E_SUM, E_WIDTH, E_ZERO
from otel_trading.recording.rows import B0, BOUNDS, EPOCH, MAX, MIN, SUM
from otel_trading.settings import OTEL_TRADING_PURE_PYTHON, pure_python_from_env

__all__ = ["FREE_THREADED", "REFUSED", "TURNED_OFF", "record", "record_exponential", "refused", "why_not"]

_logger = logging.getLogger("otel_trading")

TURNED_OFF = f"{OTEL_TRADING_PURE_PYTHON}=true turned them off"
FREE_THREADED = "this is a free-threaded interpreter, where they are not proven safe (they rely on the GIL)"
NO_CONTEXT_VARIABLE = "OpenTelemetry's runtime context is not the contextvars one"


def refused() -> str | None:
    """Why no compiled path (hooks or this update) may run in this process; None when they may."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return FREE_THREADED
    try:
        if pure_python_from_env():
            return TURNED_OFF
    except ValueError as exc:
        _logger.warning("otel-trading: %s; using the compiled hot paths", exc)
    return None


#: ``refused()`` at import: decided once per process.
REFUSED: str | None = refused()


def _load(
    refusal: str | None,
) -> tuple[
    Callable[[list[Any], float], bool | None] | None, Callable[[list[Any], float], int | None] | None, str | None
]:
    """The configured ``record`` and ``record_exponential`` and None, or None twice and why not
    (``refusal``, when not None)."""
    if refusal is not None:
        return None, None, refusal
    context = otel_context_var()
    if context is None:  # record() could not see a span: the inline Python checks any runtime context
        return None, None, NO_CONTEXT_VARIABLE
    try:
        from otel_trading.recording import _fast_rows
    except ImportError as exc:
        return None, None, str(exc)
    try:
        _fast_rows.configure(BOUNDS, SUM, MIN, MAX, B0, context)
        _fast_rows.configure_epochs(EPOCH, E_WIDTH, E_FACTOR, E_LO, E_HI, E_ZERO, E_SUM, E_COUNTS)
    except (AttributeError, TypeError, ValueError) as exc:  # built from other sources (an editable install not rebuilt)
        return None, None, f"{exc}; rebuild it (pip install -e .)"
    return _fast_rows.record, _fast_rows.record_exponential, None


#: The compiled ``record(row, value)`` and ``record_exponential(row, value)``, or None (and ``why_not``
#: says why).
record, record_exponential, why_not = _load(REFUSED)
