"""The dashboard's panels: circuit breakers, event bus, event loop and otel-trading's self-monitoring."""

from __future__ import annotations

from typing import Any

from otel_trading.metric_contract import (
    BREAKER_FAILURES,
    BREAKER_LATENCY,
    BREAKER_REJECTED,
    BREAKER_STATE,
    BREAKER_SUCCESSES,
    BREAKER_TRANSITIONS,
    BUS_HANDLER_ERRORS,
    BUS_PROCESSED,
    BUS_PROCESSING_DURATION,
    BUS_PUBLISHED,
    BUS_QUEUE_SIZE,
    BUS_SUBSCRIBERS,
    LABEL_VALUES_FOLDED,
    LOOP_LAG,
    OVERFLOW_LABEL_VALUE,
)
from otel_trading.tooling.dashboard.grafana_model import Json, targets, timeseries
from otel_trading.tooling.dashboard.promql import gauge_max, increase, increase_above, quantile, rate
from otel_trading.tooling.dashboard.templating import BREAKER_VAR, DATASOURCE, EVENT_TYPE_VAR

__all__ = [
    "EXEMPLARS",
    "HISTOGRAM_KINDS",
    "LOOP_STALL_SECONDS",
    "QUANTILES",
    "STATE_NAMES",
    "breaker_panels",
    "event_bus_panels",
    "event_loop_panels",
    "library_panels",
]

QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
#: A loop late by more than this is stalled (a bucket boundary of the lag histogram; the
#: EventLoopStalled alert uses the same).
LOOP_STALL_SECONDS = 0.1
#: How every histogram panel reads its series (see ``promql.quantile``).
HISTOGRAM_KINDS = (
    "_bucket series, or else the native histogram Prometheus 3 stores for an exponential histogram; "
    "a line whose series are of both kinds, in a fleet mixing them, shows the classic ones only"
)
#: What the latency panels' exemplar queries show.
EXEMPLARS = (
    "Exemplars (trace ids of single calls) show as points where Prometheus stores them "
    "(--enable-feature=exemplar-storage) and the bot records them"
)
#: ``circuit_breaker_state`` values, as the contract's description documents them.
STATE_NAMES: tuple[tuple[int, str, str], ...] = (
    (0, "CLOSED", "green"),
    (1, "OPEN", "red"),
    (2, "HALF_OPEN", "yellow"),
)


def _state_mappings() -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": index}
                for index, (value, text, color) in enumerate(STATE_NAMES)
            },
        }
    ]


def _state_thresholds() -> Json:
    return {
        "mode": "absolute",
        "steps": [
            {"color": color, "value": None if index == 0 else value}
            for index, (value, _text, color) in enumerate(STATE_NAMES)
        ],
    }


def _state_defaults(**extra: Any) -> Json:
    """Field defaults shared by the state panels: 0/1/2 shown as CLOSED/OPEN/HALF_OPEN in colour."""
    return {"mappings": _state_mappings(), "thresholds": _state_thresholds(), "color": {"mode": "thresholds"}, **extra}


def _breaker_state_stat() -> Json:
    # Per bot: across a fleet, which bot's breaker is open is the point.
    expr = gauge_max(BREAKER_STATE, ["instance", "name"], {"name": BREAKER_VAR})
    return {
        "type": "stat",
        "title": "Breaker state",
        "description": BREAKER_STATE.description,
        "datasource": dict(DATASOURCE),
        "fieldConfig": {
            "defaults": _state_defaults(unit="none"),
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "targets": targets((expr, "{{instance}} {{name}}")),
    }


def _breaker_state_timeline() -> Json:
    expr = gauge_max(BREAKER_STATE, ["instance", "name"], {"name": BREAKER_VAR})
    return {
        "type": "state-timeline",
        "title": "Breaker state history",
        "description": BREAKER_STATE.description,
        "datasource": dict(DATASOURCE),
        "fieldConfig": {
            "defaults": _state_defaults(unit="none", custom={"fillOpacity": 80, "lineWidth": 0}),
            "overrides": [],
        },
        "options": {
            "mergeValues": True,
            "showValue": "auto",
            "rowHeight": 0.9,
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": targets((expr, "{{instance}} {{name}}")),
    }


def breaker_panels() -> list[Json]:
    b = {"name": BREAKER_VAR}
    quantile_targets = targets(
        *((quantile(BREAKER_LATENCY, q, ["name"], b), f"{{{{name}}}} p{round(q * 100)}") for q in QUANTILES),
        exemplar=True,
    )
    return [
        _breaker_state_stat(),
        _breaker_state_timeline(),
        timeseries(
            "State transitions",
            f"{BREAKER_TRANSITIONS.description}, per rate interval, by origin and destination state",
            targets(
                (
                    increase(BREAKER_TRANSITIONS, ["name", "from_state", "to_state"], b),
                    "{{name}}: {{from_state}} -> {{to_state}}",
                )
            ),
            "short",
        ),
        timeseries(
            "Call outcomes",
            f"{BREAKER_FAILURES.description} and {BREAKER_SUCCESSES.description.lower()}, per second",
            targets(
                (rate(BREAKER_FAILURES, ["name"], b), "{{name}} failures"),
                (rate(BREAKER_SUCCESSES, ["name"], b), "{{name}} successes"),
            ),
            "reqps",
        ),
        timeseries(
            "Call latency (p50 / p95 / p99)",
            f"{BREAKER_LATENCY.description}: quantiles estimated from the histogram buckets (classic "
            f"{HISTOGRAM_KINDS}). {EXEMPLARS}",
            quantile_targets,
            "s",
        ),
        timeseries(
            "Rejected calls",
            f"{BREAKER_REJECTED.description}, per second",
            targets((rate(BREAKER_REJECTED, ["name"], b), "{{name}}")),
            "reqps",
        ),
    ]


def event_bus_panels() -> list[Json]:
    e = {"event_type": EVENT_TYPE_VAR}
    quantile_targets = targets(
        *((quantile(BUS_PROCESSING_DURATION, q, [], e), f"p{round(q * 100)}") for q in QUANTILES),
        exemplar=True,
    )
    return [
        timeseries(
            "Events published vs processed",
            f"{BUS_PUBLISHED.description} and {BUS_PROCESSED.description.lower()}, per second",
            targets(
                (rate(BUS_PUBLISHED, ["event_type"], e), "{{event_type}} published"),
                (rate(BUS_PROCESSED, ["event_type"], e), "{{event_type}} processed"),
            ),
            "ops",
        ),
        timeseries(
            "Queue size",
            f"{BUS_QUEUE_SIZE.description} per bot and bus",
            targets((gauge_max(BUS_QUEUE_SIZE, ["instance", "bus"]), "{{instance}} {{bus}}")),
            "short",
        ),
        timeseries(
            "Processing duration (p50 / p95 / p99)",
            f"{BUS_PROCESSING_DURATION.description} over the selected event types, from the histogram "
            f"buckets (classic {HISTOGRAM_KINDS}); the HighEventProcessingLatency alert fires on p99 > 1s "
            f"for 10m. {EXEMPLARS}",
            quantile_targets,
            "s",
        ),
        timeseries(
            "Subscribers",
            f"{BUS_SUBSCRIBERS.description} per event type",
            targets((gauge_max(BUS_SUBSCRIBERS, ["event_type"], e), "{{event_type}}")),
            "short",
        ),
        timeseries(
            "Handler errors",
            f"{BUS_HANDLER_ERRORS.description}, per second",
            targets((rate(BUS_HANDLER_ERRORS, ["event_type"], e), "{{event_type}}")),
            "ops",
        ),
    ]


def event_loop_panels() -> list[Json]:
    # Per bot and loop: a stall is one process's problem, and averaging it over a fleet hides it.
    by = ["instance", "loop"]
    return [
        timeseries(
            "Event-loop lag (p50 / p95 / p99)",
            f"{LOOP_LAG.description}. From the histogram buckets (classic {HISTOGRAM_KINDS}). An idle loop "
            "answers within 1 ms (the first classic bucket), so quantiles there read as up to 1 ms",
            targets(
                *((quantile(LOOP_LAG, q, by), f"{{{{instance}}}} {{{{loop}}}} p{round(q * 100)}") for q in QUANTILES)
            ),
            "s",
        ),
        timeseries(
            f"Event-loop stalls over {LOOP_STALL_SECONDS * 1000:.0f} ms",
            f"Times the loop was more than {LOOP_STALL_SECONDS:g} s late, per rate interval: each is a handler "
            "or coroutine that blocked the loop (a synchronous call, a heavy computation). The EventLoopStalled "
            f'alert fires on these. Classic histograms count them exactly (the le="{LOOP_STALL_SECONDS:g}" '
            f"bucket); for native ones the count is an estimate (the count times the fraction above "
            f"{LOOP_STALL_SECONDS:g} s, interpolated inside the native bucket that holds it)",
            targets((increase_above(LOOP_LAG, LOOP_STALL_SECONDS, by), "{{instance}} {{loop}}")),
            "short",
        ),
    ]


def library_panels() -> list[Json]:
    return [
        timeseries(
            f"Label values folded into {OVERFLOW_LABEL_VALUE}",
            f"{LABEL_VALUES_FOLDED.description}; per rate interval, by label. Anything above 0 means "
            "series of new breakers or event types are being merged (raise OTEL_TRADING_MAX_LABEL_VALUES "
            "or fix the label source)",
            targets((increase(LABEL_VALUES_FOLDED, ["label"]), "{{label}}")),
            "short",
        ),
    ]
