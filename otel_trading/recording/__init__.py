"""The recording layer: hot-path rows, the series they feed, and how OTel readers get them.

- ``rows``: the plain lists components count and time into (per thread or per event loop).
- ``series``: one label set of one component kind, and its binding to the SDK.
- ``registry``: every instrument of one MeterProvider; one snapshot per collection.
- ``sdk_binding``: serving the rows' histograms to SDK readers (the one private SDK hook).
- ``fast_rows``: the components' compiled histogram update (``_fast_rows.c``), when built.
"""

from otel_trading.recording.registry import (
    MetricsRegistry,
    global_provider_is_set,
    registry_for,
    reset_global_registry,
)
from otel_trading.recording.rows import (
    B0,
    BOUNDS,
    C0,
    C1,
    C2,
    FAILURES,
    HANDLER_ERRORS,
    MAX,
    MIN,
    PROCESSED,
    PUBLISHED,
    REJECTED,
    SUCCESSES,
    SUM,
    CountedRow,
    Row,
    SingleRow,
    ThreadRows,
    new_row,
    observe,
    sample_gaps,
)
from otel_trading.recording.sdk_binding import rows_supported, views
from otel_trading.recording.series import Binding, Series

__all__ = [
    "B0",
    "BOUNDS",
    "C0",
    "C1",
    "C2",
    "FAILURES",
    "HANDLER_ERRORS",
    "MAX",
    "MIN",
    "PROCESSED",
    "PUBLISHED",
    "REJECTED",
    "SUCCESSES",
    "SUM",
    "Binding",
    "CountedRow",
    "MetricsRegistry",
    "Row",
    "Series",
    "SingleRow",
    "ThreadRows",
    "global_provider_is_set",
    "new_row",
    "observe",
    "registry_for",
    "reset_global_registry",
    "rows_supported",
    "sample_gaps",
    "views",
]
