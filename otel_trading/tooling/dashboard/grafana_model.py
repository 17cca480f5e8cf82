"""Grafana's dashboard JSON model: query targets, time-series panels and rows, as plain dicts."""

from __future__ import annotations

from typing import Any

from otel_trading.tooling.dashboard.templating import DATASOURCE

__all__ = ["Json", "row", "targets", "timeseries"]

Json = dict[str, Any]


def _target(expr: str, legend: str, ref: str, exemplar: bool) -> Json:
    target: Json = {
        "datasource": dict(DATASOURCE),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }
    if exemplar:
        # Grafana asks Prometheus for the exemplars (trace ids) of the series this query reads and
        # draws them as points; Prometheus keeps them only with --enable-feature=exemplar-storage.
        target["exemplar"] = True
    return target


def targets(*pairs: tuple[str, str], exemplar: bool = False) -> list[Json]:
    """One query target per (PromQL, legend) pair, with refIds A, B, ...; ``exemplar`` turns on
    Grafana's exemplar query for each of them."""
    return [_target(expr, legend, chr(ord("A") + i), exemplar) for i, (expr, legend) in enumerate(pairs)]


def timeseries(title: str, description: str, targets: list[Json], unit: str, *, stack: bool = False) -> Json:
    """A time-series panel (lines from 0, table legend with last and max)."""
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
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


def row(title: str) -> Json:
    """A row header (expanded)."""
    return {"type": "row", "title": title, "collapsed": False, "panels": []}
