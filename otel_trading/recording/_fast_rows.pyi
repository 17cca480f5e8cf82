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

def configure_epochs(
    column: int, width: int, factor: int, lo: int, hi: int, zero: int, sum: int, counts: int, /
) -> None:
    """The row column of the exponential epoch, the epoch's length and its fields' indices (after
    ``configure``). ValueError when they do not fit the layout."""

def record_exponential(row: list[Any], value: float, /) -> int | None:
    """``record`` for a row that also keeps exponential buckets: add ``value`` to the row's histogram
    columns and, unless the epoch must be rescaled (or is None), to its epoch. Returns 1 when
    OpenTelemetry's current Context is not empty, plus 2 when the epoch was left for Python to update;
    None, with nothing recorded, when ``row`` is not a row of the layout or the epochs are not
    configured."""
