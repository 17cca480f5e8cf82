"""The dashboard's template variables (data source, breaker, event type) and their substitution in queries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from otel_trading.metric_contract import BREAKER_STATE, BUS_PUBLISHED, MetricSpec
from otel_trading.tooling.dashboard.promql import contract_label

__all__ = [
    "BREAKER_VAR",
    "DATASOURCE",
    "DATASOURCE_UID",
    "EVENT_TYPE_VAR",
    "FLEET_ALL",
    "INSTANCE_VAR",
    "JOB_VAR",
    "concrete_query",
    "templating",
]

#: The uid given to the data source in deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
_DS_VAR = "datasource"
JOB_VAR = "job"
INSTANCE_VAR = "instance"
BREAKER_VAR = "breaker"
EVENT_TYPE_VAR = "event_type"
#: "All" of the job and instance variables.
FLEET_ALL = ".+"
#: The data source reference every panel and query uses: the ``datasource`` variable.
DATASOURCE: dict[str, Any] = {"type": "prometheus", "uid": f"${{{_DS_VAR}}}"}

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _query_variable(
    name: str, label: str, spec: MetricSpec, label_name: str, within: str = "", all_value: str = ".*"
) -> dict[str, Any]:
    """A multi-value variable with "All" (the regex ``all_value``); ``within`` narrows its values (e.g. to
    the chosen job)."""
    query = f"label_values({spec.prometheus_name}{within}, {contract_label(spec, label_name)})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        # "All" as a regex, not an enumeration of the values seen at load time.
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "hide": 0,
        "skipUrlSync": False,
    }


def templating() -> dict[str, Any]:
    """The dashboard's ``templating`` section."""
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
            # Every series Prometheus stores has a job and an instance: ".+" (dashboard-linter's
            # template-job and template-instance rules) matches them all. A breaker or event type
            # named "" has no label at all, so those two keep ".*".
            _query_variable(JOB_VAR, "Job", BREAKER_STATE, "job", all_value=FLEET_ALL),
            _query_variable(
                INSTANCE_VAR, "Instance", BREAKER_STATE, "instance", f'{{job=~"${JOB_VAR}"}}', all_value=FLEET_ALL
            ),
            _query_variable(BREAKER_VAR, "Breaker", BREAKER_STATE, "name", f'{{job=~"${JOB_VAR}"}}'),
            _query_variable(EVENT_TYPE_VAR, "Event type", BUS_PUBLISHED, "event_type", f'{{job=~"${JOB_VAR}"}}'),
        ]
    }


def concrete_query(expr: str, rate_interval: str = "1m", variables: Mapping[str, str] | None = None) -> str:
    """``expr`` with Grafana's variables replaced, ready for Prometheus' HTTP API.

    ``$__rate_interval`` becomes ``rate_interval``; the dashboard's own variables become
    ``variables[name]`` (default: the variable's "All", ``.+`` for job and instance, ``.*`` for the
    others). Unknown variables raise ``KeyError``.
    """
    values = {var: ".*" for var in (BREAKER_VAR, EVENT_TYPE_VAR)}
    values.update({var: FLEET_ALL for var in (JOB_VAR, INSTANCE_VAR)})
    values["__rate_interval"] = rate_interval
    values.update(variables or {})

    def replace(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return _VARIABLE.sub(replace, expr)
