"""Generate the Grafana dashboard (``deploy/grafana/dashboards/trading_system.json``) from the contract.

Every metric name, label and histogram series in the dashboard comes from
:mod:`otel_trading.metric_contract`, so the dashboard cannot drift from what the code exports.
The output is deterministic (insertion-ordered keys, fixed ids and layout, trailing newline), so the
committed file can be compared byte for byte with :func:`render_dashboard`:

    otel-trading dashboard                 # (re)write the committed file
    otel-trading dashboard --check         # exit 1 if the committed file is stale

Queries aggregate with ``sum by``/``max by`` over the contract's labels only, so the extra labels a
scrape adds (``job``, ``instance``, the in-process exporter's ``otel_scope_*``) neither split nor
duplicate series. Rates use ``$__rate_interval``; the provisioned data source sets ``timeInterval``
to the scrape interval, which that variable needs.

:func:`panel_queries` lists every (panel title, PromQL) pair and :func:`concrete_query` replaces the
Grafana variables, so tests can evaluate each panel query against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
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
    OVERFLOW_LABEL_VALUE,
    InstrumentKind,
    MetricSpec,
)

__all__ = [
    "DASHBOARD_TITLE",
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "DEFAULT_OUTPUT",
    "QUANTILES",
    "STATE_NAMES",
    "add_subcommand",
    "build_dashboard",
    "concrete_query",
    "panel_queries",
    "render_dashboard",
    "write_dashboard",
]

Json = dict[str, Any]

DASHBOARD_UID = "otel-trading-system"
DASHBOARD_TITLE = "Trading System"
#: The uid given to the data source in deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
#: Relative to the repository root (where the CLI is meant to be run for this subcommand).
DEFAULT_OUTPUT = Path("deploy/grafana/dashboards/trading_system.json")
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
#: ``circuit_breaker_state`` values, as the contract's description documents them.
STATE_NAMES: tuple[tuple[int, str, str], ...] = (
    (0, "CLOSED", "green"),
    (1, "OPEN", "red"),
    (2, "HALF_OPEN", "yellow"),
)

_SCHEMA_VERSION = 39
_DS_VAR = "datasource"
_BREAKER_VAR = "breaker"
_EVENT_TYPE_VAR = "event_type"
_DATASOURCE: Json = {"type": "prometheus", "uid": f"${{{_DS_VAR}}}"}
_GRID_WIDTH = 24
_PANEL_HEIGHT = 8


# --- PromQL building blocks --------------------------------------------------------------------


def _label(spec: MetricSpec, label: str) -> str:
    """``label``, after checking the contract declares it for ``spec``."""
    if label not in spec.labels:
        raise ValueError(f"{spec.prometheus_name} has no label {label!r} (labels: {spec.labels})")
    return label


def _series(spec: MetricSpec, suffix: str = "") -> str:
    """A sample name of ``spec`` (``suffix`` selects ``_bucket`` etc. of a histogram)."""
    name = spec.prometheus_name + suffix
    if name not in spec.series_names:
        raise ValueError(f"{name} is not a series of {spec.prometheus_name} ({spec.series_names})")
    return name


def _selector(spec: MetricSpec, suffix: str = "", filters: Mapping[str, str] | None = None) -> str:
    """``name{label=~"$var", ...}`` for the given {label: dashboard variable} filters."""
    matchers = ", ".join(f'{_label(spec, lbl)}=~"${var}"' for lbl, var in (filters or {}).items())
    name = _series(spec, suffix)
    return f"{name}{{{matchers}}}" if matchers else name


def _by(spec: MetricSpec, *labels: str) -> str:
    return ", ".join(_label(spec, lbl) for lbl in labels)


def _rate(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """Per-second rate of a counter, summed over everything but ``by``."""
    if spec.kind is not InstrumentKind.COUNTER:
        raise ValueError(f"rate() of non-counter {spec.prometheus_name}")
    return f"sum by ({_by(spec, *by)}) (rate({_selector(spec, '', filters)}[$__rate_interval]))"


def _increase(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    if spec.kind is not InstrumentKind.COUNTER:
        raise ValueError(f"increase() of non-counter {spec.prometheus_name}")
    return f"sum by ({_by(spec, *by)}) (increase({_selector(spec, '', filters)}[$__rate_interval]))"


def _gauge_max(spec: MetricSpec, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    """Largest value per ``by`` group: the same series scraped twice must not add up."""
    if spec.kind is not InstrumentKind.GAUGE:
        raise ValueError(f"{spec.prometheus_name} is not a gauge")
    return f"max by ({_by(spec, *by)}) ({_selector(spec, '', filters)})"


def _quantile(spec: MetricSpec, q: float, by: Sequence[str], filters: Mapping[str, str] | None = None) -> str:
    if spec.kind is not InstrumentKind.HISTOGRAM:
        raise ValueError(f"{spec.prometheus_name} is not a histogram")
    group = ", ".join([*(_label(spec, lbl) for lbl in by), "le"])
    bucket = _selector(spec, "_bucket", filters)
    return f"histogram_quantile({q}, sum by ({group}) (rate({bucket}[$__rate_interval])))"


# --- Panels ------------------------------------------------------------------------------------


def _target(expr: str, legend: str, ref: str) -> Json:
    return {
        "datasource": dict(_DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }


def _targets(*pairs: tuple[str, str]) -> list[Json]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


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


def _timeseries(title: str, description: str, targets: list[Json], unit: str, *, stack: bool = False) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": dict(_DATASOURCE),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def _state_defaults(**extra: Any) -> Json:
    """Field defaults shared by the state panels: 0/1/2 shown as CLOSED/OPEN/HALF_OPEN in colour."""
    return {"mappings": _state_mappings(), "thresholds": _state_thresholds(), "color": {"mode": "thresholds"}, **extra}


def _breaker_state_stat() -> Json:
    expr = _gauge_max(BREAKER_STATE, ["name"], {"name": _BREAKER_VAR})
    return {
        "type": "stat",
        "title": "Breaker state",
        "description": BREAKER_STATE.description,
        "datasource": dict(_DATASOURCE),
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
        "targets": _targets((expr, "{{name}}")),
    }


def _breaker_state_timeline() -> Json:
    expr = _gauge_max(BREAKER_STATE, ["name"], {"name": _BREAKER_VAR})
    return {
        "type": "state-timeline",
        "title": "Breaker state history",
        "description": BREAKER_STATE.description,
        "datasource": dict(_DATASOURCE),
        "fieldConfig": {
            "defaults": _state_defaults(custom={"fillOpacity": 80, "lineWidth": 0}),
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
        "targets": _targets((expr, "{{name}}")),
    }


def _breaker_panels() -> list[Json]:
    b = {"name": _BREAKER_VAR}
    quantile_targets = _targets(
        *((_quantile(BREAKER_LATENCY, q, ["name"], b), f"{{{{name}}}} p{round(q * 100)}") for q in QUANTILES)
    )
    return [
        _breaker_state_stat(),
        _breaker_state_timeline(),
        _timeseries(
            "State transitions",
            f"{BREAKER_TRANSITIONS.description}, per rate interval, by origin and destination state",
            _targets(
                (
                    _increase(BREAKER_TRANSITIONS, ["name", "from_state", "to_state"], b),
                    "{{name}}: {{from_state}} -> {{to_state}}",
                )
            ),
            "short",
        ),
        _timeseries(
            "Call outcomes",
            f"{BREAKER_FAILURES.description} and {BREAKER_SUCCESSES.description.lower()}, per second",
            _targets(
                (_rate(BREAKER_FAILURES, ["name"], b), "{{name}} failures"),
                (_rate(BREAKER_SUCCESSES, ["name"], b), "{{name}} successes"),
            ),
            "reqps",
        ),
        _timeseries(
            "Call latency (p50 / p95 / p99)",
            f"{BREAKER_LATENCY.description}: quantiles estimated from the histogram buckets",
            quantile_targets,
            "s",
        ),
        _timeseries(
            "Rejected calls",
            f"{BREAKER_REJECTED.description}, per second",
            _targets((_rate(BREAKER_REJECTED, ["name"], b), "{{name}}")),
            "reqps",
        ),
    ]


def _event_bus_panels() -> list[Json]:
    e = {"event_type": _EVENT_TYPE_VAR}
    quantile_targets = _targets(
        *((_quantile(BUS_PROCESSING_DURATION, q, [], e), f"p{round(q * 100)}") for q in QUANTILES)
    )
    return [
        _timeseries(
            "Events published vs processed",
            f"{BUS_PUBLISHED.description} and {BUS_PROCESSED.description.lower()}, per second",
            _targets(
                (_rate(BUS_PUBLISHED, ["event_type"], e), "{{event_type}} published"),
                (_rate(BUS_PROCESSED, ["event_type"], e), "{{event_type}} processed"),
            ),
            "ops",
        ),
        _timeseries(
            "Queue size",
            f"{BUS_QUEUE_SIZE.description} per bus (largest across scrape targets)",
            _targets((_gauge_max(BUS_QUEUE_SIZE, ["bus"]), "{{bus}}")),
            "short",
        ),
        _timeseries(
            "Processing duration (p50 / p95 / p99)",
            f"{BUS_PROCESSING_DURATION.description} over the selected event types; the "
            "HighEventProcessingLatency alert fires on p99 > 1s for 10m",
            quantile_targets,
            "s",
        ),
        _timeseries(
            "Subscribers",
            f"{BUS_SUBSCRIBERS.description} per event type",
            _targets((_gauge_max(BUS_SUBSCRIBERS, ["event_type"], e), "{{event_type}}")),
            "short",
        ),
        _timeseries(
            "Handler errors",
            f"{BUS_HANDLER_ERRORS.description}, per second",
            _targets((_rate(BUS_HANDLER_ERRORS, ["event_type"], e), "{{event_type}}")),
            "ops",
        ),
    ]


def _library_panels() -> list[Json]:
    return [
        _timeseries(
            f"Label values folded into {OVERFLOW_LABEL_VALUE}",
            f"{LABEL_VALUES_FOLDED.description}; per rate interval, by label. Anything above 0 means "
            "series of new breakers or event types are being merged (raise OTEL_TRADING_MAX_LABEL_VALUES "
            "or fix the label source)",
            _targets((_increase(LABEL_VALUES_FOLDED, ["label"]), "{{label}}")),
            "short",
        ),
    ]


def _row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def _layout(sections: Sequence[tuple[str, list[Json]]]) -> list[Json]:
    """Rows and panels with fixed ids and a two-column grid (stat panels narrower)."""
    out: list[Json] = []
    next_id = 1
    y = 0
    for title, panels in sections:
        row = _row(title)
        row["id"] = next_id
        row["gridPos"] = {"h": 1, "w": _GRID_WIDTH, "x": 0, "y": y}
        out.append(row)
        next_id += 1
        y += 1
        x = 0
        for panel in panels:
            width = 8 if panel["type"] == "stat" else 16 if panel["type"] == "state-timeline" else 12
            if x + width > _GRID_WIDTH:
                x = 0
                y += _PANEL_HEIGHT
            placed = {"id": next_id, "gridPos": {"h": _PANEL_HEIGHT, "w": width, "x": x, "y": y}}
            placed.update(panel)
            out.append(placed)
            next_id += 1
            x += width
        y += _PANEL_HEIGHT
    return out


# --- Template variables ------------------------------------------------------------------------


def _query_variable(name: str, label: str, spec: MetricSpec, label_name: str) -> Json:
    query = f"label_values({spec.prometheus_name}, {_label(spec, label_name)})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(_DATASOURCE),
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        # "All" as a regex, not an enumeration of the values seen at load time.
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "hide": 0,
        "skipUrlSync": False,
    }


def _templating() -> Json:
    return {
        "list": [
            {
                "type": "datasource",
                "name": _DS_VAR,
                "label": "Data source",
                "query": "prometheus",
                "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID},
                "options": [],
                "refresh": 1,
                "regex": "",
                "hide": 0,
                "skipUrlSync": False,
            },
            _query_variable(_BREAKER_VAR, "Breaker", BREAKER_STATE, "name"),
            _query_variable(_EVENT_TYPE_VAR, "Event type", BUS_PUBLISHED, "event_type"),
        ]
    }


# --- Public API --------------------------------------------------------------------------------


def build_dashboard() -> Json:
    """The dashboard as a JSON-ready dict (a fresh object on every call)."""
    return {
        "id": None,
        "uid": DASHBOARD_UID,
        "title": DASHBOARD_TITLE,
        "description": "otel-trading circuit breakers and event bus (generated by otel_trading/dashboard.py)",
        "tags": ["otel-trading", "trading"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": _SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h"]},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [],
        "templating": _templating(),
        "panels": _layout(
            [
                ("Circuit breakers", _breaker_panels()),
                ("Event bus", _event_bus_panels()),
                ("otel-trading self-monitoring", _library_panels()),
            ]
        ),
    }


def render_dashboard() -> str:
    """The dashboard JSON exactly as committed: 2-space indent, insertion order, trailing newline."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def write_dashboard(path: str | Path) -> Path:
    """Write :func:`render_dashboard` to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_dashboard(), encoding="utf-8")
    return out


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of every panel, in dashboard order.

    Expressions still contain Grafana variables; see :func:`concrete_query`.
    """
    return [
        (panel["title"], target["expr"])
        for panel in build_dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel.get("targets", [])
    ]


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def concrete_query(expr: str, rate_interval: str = "1m", variables: Mapping[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced, ready for Prometheus' HTTP API.

    ``$__rate_interval`` becomes ``rate_interval``; the dashboard's own variables become
    ``variables[name]`` (default ``.*``, i.e. "All"). Unknown variables raise ``KeyError``.
    """
    values = {_BREAKER_VAR: ".*", _EVENT_TYPE_VAR: ".*", "__rate_interval": rate_interval}
    values.update(variables or {})

    def replace(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return _VARIABLE.sub(replace, expr)


# --- CLI ---------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    path = Path(args.output)
    expected = render_dashboard()
    if args.check:
        try:
            actual = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"{path}: missing; run `otel-trading dashboard --output {path}`", file=sys.stderr)
            return 1
        if actual != expected:
            print(f"{path}: out of date; run `otel-trading dashboard --output {path}`", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    write_dashboard(path)
    print(f"wrote {path}")
    return 0


def add_subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``dashboard`` on an argparse subparsers object; ``args.func(args)`` returns the exit code."""
    parser = subparsers.add_parser(
        "dashboard",
        help="generate the Grafana dashboard JSON from the metric contract",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        metavar="PATH",
        help=f"where to write the JSON (default: {DEFAULT_OUTPUT}, relative to the current directory)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if PATH differs from the generated dashboard",
    )
    parser.set_defaults(func=_run)
    return parser
