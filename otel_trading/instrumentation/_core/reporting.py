"""Failures of instrumentation code and configuration warnings, each logged once (never raised into the bot)."""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["report", "reset_reports", "warn_once"]

_logger = logging.getLogger("otel_trading.instrumentation")

_reported: set[str] = set()
_reported_lock = threading.Lock()


def report(site: str, exc: BaseException) -> None:
    """Log a failure inside instrumentation code: first time per site with traceback, then DEBUG."""
    with _reported_lock:
        first = site not in _reported
        _reported.add(site)
    if first:
        _logger.error(
            "otel-trading instrumentation: %s failed; the instrumented code is unaffected "
            "(further failures here are logged at DEBUG)",
            site,
            exc_info=exc,
        )
    else:
        _logger.debug("otel-trading instrumentation: %s failed again: %r", site, exc)


def reset_reports() -> None:
    """Forget which failures were logged (each ``instrument()`` logs its first failures again)."""
    with _reported_lock:
        _reported.clear()


def warn_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    """A configuration-level warning (or note, at another ``level``), logged once per ``key``."""
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    _logger.log(level, message, *args)
