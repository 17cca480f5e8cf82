"""The metric contract: every instrument otel-trading records, declared once.

Code, the README Metrics Reference, the Grafana dashboard generator, the alert rules and the
collector docs all derive from (or are tested against) the specs in this module.

How an OTel name becomes the guide's Prometheus name, on both the in-process exporter and the
collector's prometheus exporter: dots become underscores, the unit is appended as a suffix
(``s`` -> ``_seconds``; curly-brace annotations such as ``{call}`` add nothing) and monotonic
sums get ``_total``. The units below are chosen so the output is exactly the guide's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BREAKER_METRICS",
    "DURATION_BUCKETS",
    "EVENT_BUS_METRICS",
    "EVENT_LOOP_METRICS",
    "LABEL_VALUES_FOLDED",
    "LIBRARY_METRICS",
    "LOOP_LAG",
    "LOOP_LAG_BUCKETS",
    "METRICS",
    "METRICS_BY_KEY",
    "OVERFLOW_LABEL_VALUE",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "InstrumentKind",
    "MetricGroup",
    "MetricSpec",
    "documented_metrics",
]


class InstrumentKind(str, Enum):
    """The OTel instrument behind a metric, and so its Prometheus type."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class MetricGroup(str, Enum):
    """Groups that can be switched off together (``OTEL_TRADING_DISABLED_METRICS``)."""

    BREAKER = "circuit_breaker"
    EVENT_BUS = "event_bus"
    #: How late each monitored asyncio event loop runs scheduled work (see ``otel_trading.loop_monitor``).
    EVENT_LOOP = "event_loop"
    #: otel-trading's own health (e.g. cardinality folding), for both component kinds.
    LIBRARY = "otel_trading"


# Seconds, from 10 us (an in-process handler) to 30 s (a venue timing out). OTel's default
# boundaries are meant for milliseconds and would put every sub-second call in the first bucket;
# these resolve the guide's "p99 > 1 s" alert with buckets on both sides of 1 s.
# Whole-number bounds are ints on purpose: the in-process exporter renders the ``le`` label with
# Python's str() ("1.0" for a float) while the collector renders "1"; Prometheus 2.x treats those
# as different series, so ``sum by (le)`` over both paths would break. Ints render as "1" on both.
DURATION_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)

# Seconds, from 1 ms to 10 s: how late an event loop ran a timer. An idle loop answers within a
# millisecond (the selector's timeout granularity), so finer buckets would only split noise; a loop
# blocked for 10 s is already an outage. Whole numbers are ints for the reason given above.
LOOP_LAG_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)

# Data-derived label values beyond the cardinality limit are folded into this one value.
OVERFLOW_LABEL_VALUE = "__overflow__"

#: The instrumentation scope every otel-trading instrument is created in (``otel_scope_name`` in
#: Prometheus). A constant, so that moving code between modules never changes exported labels.
SCOPE_NAME = "otel_trading"
#: The OpenTelemetry schema the scope declares (``otel_scope_schema_url``).
SCHEMA_URL = "https://opentelemetry.io/schemas/1.40.0"


@dataclass(frozen=True)
class MetricSpec:
    """One instrument: its OTel identity and the Prometheus series it becomes."""

    key: str
    otel_name: str
    kind: InstrumentKind
    unit: str
    description: str
    prometheus_name: str
    labels: tuple[str, ...]
    group: MetricGroup
    documented_in_guide: bool = True
    buckets: tuple[float, ...] | None = None
    #: A known lint finding on the name, kept because the guide fixes the name (shown in the README).
    lint_note: str | None = None

    @property
    def prometheus_type(self) -> str:
        return self.kind.value

    @property
    def series_names(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this metric."""
        if self.kind is InstrumentKind.HISTOGRAM:
            base = self.prometheus_name
            return (f"{base}_bucket", f"{base}_count", f"{base}_sum")
        return (self.prometheus_name,)

    @property
    def native_series_name(self) -> str | None:
        """The one series a native (exponential) histogram of this metric is stored as in Prometheus 3
        (its plain name: no ``_bucket``/``_count``/``_sum``), or None for a metric that is not a histogram.

        Not one of :attr:`series_names`: a scrape of the classic exposition never shows it, and the
        Metrics Reference lists what the exporters write. Dashboards and alerts query it beside the
        classic series (``... or ...``), so one query serves bots exporting either kind.
        """
        if self.kind is InstrumentKind.HISTOGRAM:
            return self.prometheus_name
        return None


_B = MetricGroup.BREAKER
_E = MetricGroup.EVENT_BUS

BREAKER_STATE = MetricSpec(
    key="breaker_state",
    otel_name="circuit_breaker.state",
    kind=InstrumentKind.GAUGE,
    unit="{state}",
    description="Current state (0=CLOSED, 1=OPEN, 2=HALF_OPEN)",
    prometheus_name="circuit_breaker_state",
    labels=("name",),
    group=_B,
)
BREAKER_TRANSITIONS = MetricSpec(
    key="breaker_transitions",
    otel_name="circuit_breaker.transitions",
    kind=InstrumentKind.COUNTER,
    unit="{transition}",
    description="Total state transitions",
    prometheus_name="circuit_breaker_transitions_total",
    labels=("name", "from_state", "to_state"),
    group=_B,
)
BREAKER_FAILURES = MetricSpec(
    key="breaker_failures",
    otel_name="circuit_breaker.failures",
    kind=InstrumentKind.COUNTER,
    unit="{call}",
    description="Total failures",
    prometheus_name="circuit_breaker_failures_total",
    labels=("name",),
    group=_B,
)
BREAKER_SUCCESSES = MetricSpec(
    key="breaker_successes",
    otel_name="circuit_breaker.successes",
    kind=InstrumentKind.COUNTER,
    unit="{call}",
    description="Total successes",
    prometheus_name="circuit_breaker_successes_total",
    labels=("name",),
    group=_B,
)
BREAKER_LATENCY = MetricSpec(
    key="breaker_latency",
    otel_name="circuit_breaker.latency",
    kind=InstrumentKind.HISTOGRAM,
    unit="s",
    description="Execution latency",
    prometheus_name="circuit_breaker_latency_seconds",
    labels=("name",),
    group=_B,
    buckets=DURATION_BUCKETS,
)
BREAKER_REJECTED = MetricSpec(
    key="breaker_rejected",
    otel_name="circuit_breaker.rejected",
    kind=InstrumentKind.COUNTER,
    unit="{call}",
    description="Total calls rejected while the breaker was OPEN (or HALF_OPEN with no trial slot free)",
    prometheus_name="circuit_breaker_rejected_total",
    labels=("name",),
    group=_B,
    documented_in_guide=False,
)
BUS_PUBLISHED = MetricSpec(
    key="bus_published",
    otel_name="event_bus.events.published",
    kind=InstrumentKind.COUNTER,
    unit="{event}",
    description="Total events published",
    prometheus_name="event_bus_events_published_total",
    labels=("event_type",),
    group=_E,
)
BUS_PROCESSED = MetricSpec(
    key="bus_processed",
    otel_name="event_bus.events.processed",
    kind=InstrumentKind.COUNTER,
    unit="{event}",
    description="Total events processed",
    prometheus_name="event_bus_events_processed_total",
    labels=("event_type",),
    group=_E,
)
BUS_QUEUE_SIZE = MetricSpec(
    key="bus_queue_size",
    otel_name="event_bus.queue_size",
    kind=InstrumentKind.GAUGE,
    unit="{event}",
    description="Current queue size",
    prometheus_name="event_bus_queue_size",
    labels=("bus",),
    group=_E,
)
BUS_PROCESSING_DURATION = MetricSpec(
    key="bus_processing_duration",
    otel_name="event_bus.processing.duration",
    kind=InstrumentKind.HISTOGRAM,
    unit="s",
    description="Event processing time",
    prometheus_name="event_bus_processing_duration_seconds",
    labels=("event_type",),
    group=_E,
    buckets=DURATION_BUCKETS,
)
# The guide names this series with a "_gauge" suffix; the OTel name keeps it so the output matches.
BUS_SUBSCRIBERS = MetricSpec(
    key="bus_subscribers",
    otel_name="event_bus.subscribers_gauge",
    kind=InstrumentKind.GAUGE,
    unit="{subscriber}",
    description="Current subscriber count",
    prometheus_name="event_bus_subscribers_gauge",
    labels=("event_type",),
    group=_E,
    lint_note="`promtool check metrics` warns that the name includes its type (`_gauge`); the guide fixes the name",
)
BUS_HANDLER_ERRORS = MetricSpec(
    key="bus_handler_errors",
    otel_name="event_bus.handler.errors",
    kind=InstrumentKind.COUNTER,
    unit="{error}",
    description="Total handler invocations that raised",
    prometheus_name="event_bus_handler_errors_total",
    labels=("event_type",),
    group=_E,
    documented_in_guide=False,
)

BREAKER_METRICS: tuple[MetricSpec, ...] = (
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    BREAKER_FAILURES,
    BREAKER_SUCCESSES,
    BREAKER_LATENCY,
    BREAKER_REJECTED,
)
EVENT_BUS_METRICS: tuple[MetricSpec, ...] = (
    BUS_PUBLISHED,
    BUS_PROCESSED,
    BUS_QUEUE_SIZE,
    BUS_PROCESSING_DURATION,
    BUS_SUBSCRIBERS,
    BUS_HANDLER_ERRORS,
)
# Not the guide's, and no OpenTelemetry semantic convention covers it (the runtime conventions have
# ``nodejs.eventloop.delay.*`` gauges for Node.js and no event-loop metric for CPython), so the name
# takes otel-trading's own prefix. ``loop`` is the monitored loop's name: by default the name of the
# thread running it (``MainThread`` under ``asyncio.run``), bounded by OTEL_TRADING_MAX_LABEL_VALUES.
LOOP_LAG = MetricSpec(
    key="loop_lag",
    otel_name="otel_trading.event_loop.lag",
    kind=InstrumentKind.HISTOGRAM,
    unit="s",
    description=(
        "How late the asyncio event loop ran a timer due at a known time: a stall of S seconds (a "
        "blocking handler) shows as one observation between S minus the monitor's interval and S"
    ),
    prometheus_name="otel_trading_event_loop_lag_seconds",
    labels=("loop",),
    group=MetricGroup.EVENT_LOOP,
    documented_in_guide=False,
    buckets=LOOP_LAG_BUCKETS,
)
EVENT_LOOP_METRICS: tuple[MetricSpec, ...] = (LOOP_LAG,)

# Self-monitoring: label values folded into OVERFLOW_LABEL_VALUE, by label (``name`` of the
# circuit_breaker_* metrics, ``event_type`` of the event_bus_* ones). Always reported, at 0 until a
# fold happens, so an alert on its increase works from the first scrape.
LABEL_VALUES_FOLDED = MetricSpec(
    key="label_values_folded",
    otel_name="otel_trading.label_values.folded",
    kind=InstrumentKind.COUNTER,
    unit="{value}",
    description=(
        "Data-derived label values folded into __overflow__ after the OTEL_TRADING_MAX_LABEL_VALUES "
        "limit (counted once per component that used the value)"
    ),
    prometheus_name="otel_trading_label_values_folded_total",
    labels=("label",),
    group=MetricGroup.LIBRARY,
    documented_in_guide=False,
)
LIBRARY_METRICS: tuple[MetricSpec, ...] = (LABEL_VALUES_FOLDED,)

METRICS: tuple[MetricSpec, ...] = BREAKER_METRICS + EVENT_BUS_METRICS + EVENT_LOOP_METRICS + LIBRARY_METRICS
METRICS_BY_KEY: dict[str, MetricSpec] = {m.key: m for m in METRICS}


def documented_metrics() -> tuple[MetricSpec, ...]:
    """The ten metrics the monitoring guide's Metrics Reference lists."""
    return tuple(m for m in METRICS if m.documented_in_guide)
