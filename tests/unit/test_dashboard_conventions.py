"""The generated dashboard meets Grafana dashboard-linter's conventions, and tells the bots of a fleet apart.

The linter (grafana/dashboard-linter v0.1.1) cannot be installed here: the Go module proxy refuses
``go install github.com/grafana/dashboard-linter@v0.1.1``, and its source needs
``github.com/grafana/loki/v3`` (AGPL, for its LogQL rules), which this project does not use. (A one-off
local build of its source without the two LogQL rules reported the two template-job/-instance
``allValue`` findings on the previous dashboard and none on this one.) So the rules of its default
rule set are asserted directly, as v0.1.1's ``lint/rule_*.go`` check them:
template-datasource, template-job, template-instance, template-label-promql,
template-on-time-change-reload, panel-datasource, panel-title-description, panel-units,
panel-no-targets, target-job, target-instance, target-rate-interval, target-counter-agg and
uneditable-dashboard (target-promql, that every query parses, is the deploy tests' real Prometheus).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from otel_trading.metric_contract import BREAKER_LATENCY, BREAKER_STATE, BUS_PROCESSING_DURATION, METRICS
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


#: ``name{matchers}``: a selector with its matchers (the dashboard writes every selector with braces).
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')


def _selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) of every selector in ``expr``."""
    out = []
    for name, body in _SELECTOR.findall(expr):
        matchers = [_MATCHER.fullmatch(m) for m in body.split(",")]
        assert all(matchers), (name, body)
        out.append((name, {m.group(1): (m.group(2), m.group(3)) for m in matchers if m}))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return build_dashboard()


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


@pytest.mark.parametrize("name", ["job", "instance"])
def test_template_variable_for_the_fleet_is_a_multi_value_query_with_all(dashboard: dict[str, Any], name: str) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    var = variables[name]
    assert var["type"] == "query"
    assert var["datasource"]["uid"] == "${datasource}"
    assert var["multi"] is True and var["includeAll"] is True
    assert f", {name})" in var["query"]


@pytest.mark.parametrize("name", ["job", "instance"])
def test_template_job_and_instance_rules(dashboard: dict[str, Any], name: str) -> None:
    # checkTemplate() of lint/rule_template_job.go, for both variables.
    var = _variables(dashboard)[name]
    assert var["datasource"]["uid"] in ("$datasource", "${datasource}")
    assert var["type"] == "query"
    assert var["label"] == name.title()
    assert var["multi"] is True
    assert var["allValue"] == ".+"


def test_template_datasource_rule(dashboard: dict[str, Any]) -> None:
    (ds,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    assert ds["name"] in ("datasource", "prometheus_datasource")
    assert ds["label"] in ("Data source", "Prometheus data source")


def test_template_label_promql_and_reload_on_time_range_change_rules(dashboard: dict[str, Any]) -> None:
    queries = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert queries
    for var in queries:
        match = re.fullmatch(r"([a-z_]+)\((.+)\)", var["query"])
        assert match and match.group(1) in ("label_names", "label_values", "metrics", "query_result"), var["query"]
        assert var["refresh"] == 2, var["name"]


def test_panel_datasource_and_no_targets_rules(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] in ("$datasource", "${datasource}"), panel["title"]
        assert panel.get("targets"), panel["title"]


def test_every_selector_of_every_query_has_the_fleet_matchers(dashboard: dict[str, Any]) -> None:
    # target-job-rule / target-instance-rule: each selector, not just each query, needs job=~"$job" and
    # instance=~"$instance" (the classic and the native side of a histogram query alike).
    known = {n for spec in METRICS for n in (*spec.series_names, spec.native_series_name) if n}
    checked = 0
    for expr in _exprs(dashboard):
        selectors = _selectors(expr)
        # No selector without braces: every metric name in the query is one of the selectors.
        assert sorted(n for n in re.findall(r"\b[a-z_]+\b(?=\{)", expr)) == sorted(n for n, _ in selectors), expr
        assert not [n for n in known if re.search(rf"\b{n}\b(?![{{_])", expr)], expr
        for _name, matchers in selectors:
            assert matchers.get("job") == ("=~", "$job"), expr
            assert matchers.get("instance") == ("=~", "$instance"), expr
            checked += 1
    assert checked > len(_exprs(dashboard))  # the histogram queries have two or more selectors


def test_counters_are_read_through_rate_or_increase(dashboard: dict[str, Any]) -> None:
    # target-counter-agg-rule: every ``_total`` selector sits directly in rate(), irate() or increase().
    for expr in _exprs(dashboard):
        for name, _matchers in _selectors(expr):
            if name.endswith("_total"):
                wrapped = rf"\b(rate|irate|increase)\({name}\{{[^}}]*\}}\[\$__rate_interval\]\)"
                assert len(re.findall(wrapped, expr)) == expr.count(f"{name}{{"), expr


@pytest.mark.parametrize("spec", [BREAKER_LATENCY, BUS_PROCESSING_DURATION], ids=lambda s: s.prometheus_name)
def test_latency_quantiles_ask_for_exemplars(dashboard: dict[str, Any], spec: Any) -> None:
    targets = [t for p in _panels(dashboard) for t in p["targets"] if f"{spec.prometheus_name}_bucket" in t["expr"]]
    assert len(targets) == 3
    assert all(t.get("exemplar") is True for t in targets)


def test_only_the_latency_quantiles_ask_for_exemplars(dashboard: dict[str, Any]) -> None:
    with_exemplars = {p["title"] for p in _panels(dashboard) for t in p["targets"] if t.get("exemplar")}
    assert with_exemplars == {"Call latency (p50 / p95 / p99)", "Processing duration (p50 / p95 / p99)"}


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
    # ... directly inside a function call (target-rate-interval-rule: never a bare range).
    for expr in _exprs(dashboard):
        calls = re.findall(r"\b(rate|irate|increase)\([a-z_]+\{[^}]*\}\[\$__rate_interval\]\)", expr)
        assert len(calls) == expr.count("[$__rate_interval]"), expr


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
