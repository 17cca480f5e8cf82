"""Support for tests of the own components' compiled update (``recording._fast_rows``): its two entry points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_trading.recording import fast_rows

from ..conftest import require_compiled_hot_paths

Record = Callable[[list[Any], float], bool | None]
RecordExponential = Callable[[list[Any], float], int | None]


def compiled_record() -> Record:
    """The compiled ``record`` (skips locally / fails in CI when it is not built or not allowed here)."""
    require_compiled_hot_paths()
    assert fast_rows.record is not None
    return fast_rows.record


def compiled_record_exponential() -> RecordExponential:
    """The compiled ``record_exponential`` (as ``compiled_record``)."""
    require_compiled_hot_paths()
    assert fast_rows.record_exponential is not None
    return fast_rows.record_exponential
