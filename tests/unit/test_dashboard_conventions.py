"""The generated dashboard meets Grafana dashboard-linter's conventions, and tells the bots of a fleet apart.

The linter itself cannot be installed from the registries here, so its rules are asserted directly:
template-job, template-instance, target-job, target-instance, target-rate-interval, panel-units,
panel-title-description and uneditable-dashboard.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from otel_trading.metric_contract import BREAKER_STATE
from otel_trading.tooling.dashboard import build_dashboard


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return build_dashboard()


@pytest.mark.parametrize("name", ["job", "instance"])
def test_template_variable_for_the_fleet_is_a_multi_value_query_with_all(dashboard: dict[str, Any], name: str) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    var = variables[name]
    assert var["type"] == "query"
    assert var["datasource"]["uid"] == "${datasource}"
    assert var["multi"] is True and var["includeAll"] is True
    assert f", {name})" in var["query"]


def test_instance_variable_follows_the_chosen_job(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert 'job=~"$job"' in variables["instance"]["query"]


@pytest.mark.parametrize("matcher", ['job=~"$job"', 'instance=~"$instance"'])
def test_every_query_filters_by_the_fleet_variables(dashboard: dict[str, Any], matcher: str) -> None:
    exprs = _exprs(dashboard)
    assert exprs
    missing = [e for e in exprs if matcher not in e]
    assert missing == []


def test_every_range_uses_the_rate_interval(dashboard: dict[str, Any]) -> None:
    ranges = [r for e in _exprs(dashboard) for r in re.findall(r"\[([^\]]+)\]", e)]
    assert ranges and set(ranges) == {"$__rate_interval"}


def test_every_panel_has_a_unit(dashboard: dict[str, Any]) -> None:
    missing = [p["title"] for p in _panels(dashboard) if not p.get("fieldConfig", {}).get("defaults", {}).get("unit")]
    assert missing == []


def test_every_panel_has_a_title_and_a_description(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    assert all(p.get("title") and p.get("description") for p in panels)


def test_the_dashboard_is_not_editable(dashboard: dict[str, Any]) -> None:
    assert dashboard["editable"] is False


def test_breaker_state_is_shown_per_bot(dashboard: dict[str, Any]) -> None:
    state = [e for e in _exprs(dashboard) if e.startswith("max by") and BREAKER_STATE.prometheus_name in e]
    assert state and all(re.match(r"max by \(instance, name\)", e) for e in state)
