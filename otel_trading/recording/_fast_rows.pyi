"""Type stubs of the own components' compiled histogram update (``_fast_rows.c``)."""

from contextvars import ContextVar
from typing import Any

def configure(
    bounds: tuple[float, ...],
    sum: int,
    min: int,
    max: int,
    b0: int,
    context: ContextVar[Any] | None = None,
    /,
) -> None:
    """The row layout ``record`` writes, and the ContextVar of OpenTelemetry's current Context (None,
    or left out: ``record`` always returns False). TypeError when ``context`` is neither."""

def record(row: list[Any], value: float, /) -> bool | None:
    """Add ``value`` to the row's histogram columns (as ``rows.observe``); True when OpenTelemetry's
    current Context is not empty (offer an exemplar), False when empty; None, with nothing recorded,
    when ``row`` is not a row of the configured layout (record it in Python)."""
