"""The deploy/ configuration: validated by the real tools, cross-checked against each other.

* Prometheus: ``promtool check config``, ``check rules`` and the alert unit tests (``test rules``).
* Alertmanager: ``amtool check-config``, routing (``amtool config routes test``) and templates
  (``amtool template render``). Secret files are read only when a notification is sent, so the
  checks run on the committed file with no secret present.
* Grafana is not run here (there is no Grafana binary): its provisioning files are checked for
  content, and the generated dashboard is compared with the generator's output and every panel
  query is evaluated by a real Prometheus scraping a synthetic exposition of the metric contract.
* docker-compose.yml: a pure-Python lint (no Docker daemon needed), so nothing is ever skipped
  for lack of Docker.

Binaries come from ``realprocs.require_binary`` (skip locally, fail in CI).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import glob
import http.server
import importlib.util
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_trading.metric_contract import METRICS, InstrumentKind, MetricSpec
from otel_trading.tooling import dashboard

from .. import realprocs

REPO = realprocs.REPO
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "rules" / "trading_alerts.yml"
RULE_TESTS = PROM_DIR / "rules" / "tests" / "trading_alerts_test.yml"
# Native histogram input series: promtool 3 only (2.42 has no notation for them).
NATIVE_RULE_TESTS = PROM_DIR / "rules" / "tests" / "native" / "trading_alerts_native_test.yml"
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
DEPLOY_README = DEPLOY / "README.md"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_JSON = GRAFANA / "dashboards" / "trading_system.json"

# The guide's two alerts, copied from its "Alert Rules" section: the rules must keep them verbatim
# (HighEventProcessingLatency's expression as the classic half of an `or`: GUIDE_EXPR_NATIVE_TWINS).
GUIDE_ALERTS: dict[str, dict[str, Any]] = {
    "CircuitBreakerTripped": {
        "expr": "circuit_breaker_state == 1",
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "Circuit breaker {{ $labels.name }} is OPEN",
            "description": "Circuit breaker {{ $labels.name }} has tripped to OPEN state",
        },
    },
    "HighEventProcessingLatency": {
        "expr": "histogram_quantile(0.99, sum(rate(event_bus_processing_duration_seconds_bucket[5m])) by (le)) > 1",
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "High event processing latency detected",
            "description": "99th percentile event processing latency is {{ $value }}s",
        },
    },
}


# The native-histogram twin each guide expression over classic buckets is `or`-ed with, compared with
# the same threshold on its own side of the `or`.
GUIDE_EXPR_NATIVE_TWINS: dict[str, str] = {
    "HighEventProcessingLatency": "histogram_quantile(0.99, sum(rate(event_bus_processing_duration_seconds[5m]))) > 1",
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _output(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(RULES)["groups"] for rule in group["rules"]]


def _alert_names() -> set[str]:
    return {rule["alert"] for rule in _rules()}


def _compose() -> dict[str, Any]:
    return _yaml(COMPOSE)


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in _yaml(PROM_CONFIG)["scrape_configs"]}


def _github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _amtool() -> str:
    return realprocs.require_binary("amtool", "/usr/bin/amtool")


# --- Prometheus configuration --------------------------------------------------------------------


def test_prometheus_config_passes_promtool_check_config_from_another_directory(tmp_path: Path) -> None:
    # Prometheus 3, as in the compose file: its otlp: block is not 2.x configuration.
    res = _run([realprocs.promtool_binary("3"), "check", "config", str(PROM_CONFIG)], cwd=tmp_path)
    assert res.returncode == 0, _output(res)
    # The rules glob resolved against the config's directory, not the working directory.
    assert "1 rule files found" in res.stdout + res.stderr, _output(res)


def test_rule_files_glob_matches_the_rules_but_not_the_unit_tests() -> None:
    patterns = _yaml(PROM_CONFIG)["rule_files"]
    matched = {Path(p) for pattern in patterns for p in glob.glob(str(PROM_DIR / pattern))}
    assert matched == {RULES}


def test_prometheus_config_has_no_storage_block() -> None:
    assert "storage" not in _yaml(PROM_CONFIG)


@pytest.mark.parametrize("version", realprocs.PROMETHEUS_VERSIONS, ids=lambda v: f"promtool{v}")
def test_guide_storage_retention_block_is_rejected_by_promtool(tmp_path: Path, version: str) -> None:
    # Backs the README's statement that retention is a flag, not prometheus.yml configuration.
    config = _yaml(PROM_CONFIG)
    config.pop("rule_files")
    config.pop("otlp")  # 3.x only; 2.42 would reject it before getting to the storage block
    config["storage"] = {"tsdb": {"retention": "15d"}}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    res = _run([realprocs.promtool_binary(version), "check", "config", str(path)])
    assert res.returncode != 0, _output(res)
    assert "retention" in res.stdout + res.stderr, _output(res)


def test_trading_bot_job_scrapes_the_guide_target_every_15s() -> None:
    job = _scrape_jobs()["trading-bot"]
    assert job["scrape_interval"] == "15s"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["host.docker.internal:8000"]


def test_collector_job_scrapes_the_collector_prometheus_exporter() -> None:
    job = _scrape_jobs()["otel-collector"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["otel-collector:8889"]


def test_alerts_are_sent_to_the_compose_alertmanager() -> None:
    targets = [
        t
        for am in _yaml(PROM_CONFIG)["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"]


# --- Alert rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", realprocs.PROMETHEUS_VERSIONS, ids=lambda v: f"promtool{v}")
def test_alert_rules_pass_promtool_check_rules(version: str) -> None:
    res = _run([realprocs.promtool_binary(version), "check", "rules", str(RULES)])
    assert res.returncode == 0, _output(res)
    assert f"{len(_rules())} rules found" in res.stdout, _output(res)


@pytest.mark.parametrize(
    ("version", "tests"),
    [*((v, RULE_TESTS) for v in realprocs.PROMETHEUS_VERSIONS), ("3", NATIVE_RULE_TESTS)],
    ids=lambda v: f"promtool{v}" if isinstance(v, str) else v.stem,
)
def test_alert_rule_unit_tests_pass_promtool_test_rules(tmp_path: Path, version: str, tests: Path) -> None:
    res = _run([realprocs.promtool_binary(version), "test", "rules", str(tests)], cwd=tmp_path)
    assert res.returncode == 0, _output(res)
    assert "SUCCESS" in res.stdout, _output(res)
    assert "FAILED" not in res.stdout + res.stderr, _output(res)


def test_the_native_rule_tests_need_promtool_3_which_is_why_they_are_a_file_of_their_own(tmp_path: Path) -> None:
    # Backs running them with promtool 3 only: 2.42 cannot read native histogram input series.
    res = _run([realprocs.promtool_binary("2"), "test", "rules", str(NATIVE_RULE_TESTS)], cwd=tmp_path)
    assert res.returncode != 0, _output(res)
    assert "unexpected character in series sequence" in res.stdout + res.stderr, _output(res)


@pytest.mark.parametrize("alert", sorted(GUIDE_ALERTS))
def test_guide_alert_is_kept_verbatim(alert: str) -> None:
    rule = next(r for r in _rules() if r.get("alert") == alert)
    expected = GUIDE_ALERTS[alert]
    twin = GUIDE_EXPR_NATIVE_TWINS.get(alert)
    assert rule["expr"].strip() == (expected["expr"] if twin is None else f"{expected['expr']} or {twin}")
    assert rule["for"] == expected["for"]
    assert rule["labels"] == expected["labels"]
    guide_annotations = {k: v for k, v in rule["annotations"].items() if k != "runbook"}
    assert guide_annotations == expected["annotations"]


def _tested(path: Path, firing: bool) -> set[str]:
    return {
        case["alertname"]
        for test in _yaml(path)["tests"]
        for case in test.get("alert_rule_test", [])
        if bool(case.get("exp_alerts")) is firing
    }


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    assert _tested(RULE_TESTS, firing=True) == _alert_names()


def test_every_alert_has_a_unit_test_where_it_stays_silent() -> None:
    assert _tested(RULE_TESTS, firing=False) == _alert_names()


def _histogram_alerts() -> set[str]:
    """The alerts reading a histogram's classic series (``_bucket``, ``_count``, ``_sum``)."""
    suffixes = [name for spec in METRICS if spec.kind is InstrumentKind.HISTOGRAM for name in spec.series_names]
    return {r["alert"] for r in _rules() if any(re.search(rf"\b{name}\b", r["expr"]) for name in suffixes)}


def test_every_histogram_alert_also_reads_the_native_series() -> None:
    natives = [spec.native_series_name for spec in METRICS if spec.native_series_name]
    histogram_alerts = _histogram_alerts()
    assert histogram_alerts == {"HighEventProcessingLatency", "EventLoopStalled"}
    for rule in _rules():
        if rule["alert"] in histogram_alerts:
            # The plain name not followed by a suffix: a selector of the native series.
            assert any(re.search(rf"\b{name}\b(?!_)", rule["expr"]) for name in natives), rule["alert"]
            assert " or " in " ".join(rule["expr"].split()), rule["alert"]


@pytest.mark.parametrize("firing", [True, False], ids=["fires", "silent"])
def test_every_histogram_alert_has_a_native_unit_test(firing: bool) -> None:
    assert _tested(NATIVE_RULE_TESTS, firing) == _histogram_alerts()


def test_every_native_unit_test_feeds_native_histogram_input() -> None:
    # Classic input appears there only beside native input (the mixed-fleet cases).
    for test in _yaml(NATIVE_RULE_TESTS)["tests"]:
        natives = [s for s in test["input_series"] if s["values"].lstrip().startswith("{{")]
        assert natives, test["name"]


def test_every_alert_has_a_runbook_anchor_that_exists_in_the_deploy_readme() -> None:
    anchors = set()
    in_code_block = False
    for line in DEPLOY_README.read_text().splitlines():
        if line.startswith("```"):
            in_code_block = not in_code_block
        elif line.startswith("#") and not in_code_block:
            anchors.add(_github_anchor(line.lstrip("#")))
    missing = {}
    for rule in _rules():
        runbook = rule["annotations"].get("runbook", "")
        path, _, fragment = runbook.partition("#")
        if path != "deploy/README.md" or fragment not in anchors:
            missing[rule["alert"]] = runbook
    assert not missing, f"runbook annotations without a matching deploy/README.md heading: {missing}"


def test_every_alert_has_a_severity_that_alertmanager_routes() -> None:
    routed = {m.split("=")[1].strip('"') for r in _yaml(AM_CONFIG)["route"]["routes"] for m in r["matchers"]}
    unrouted = {r["alert"]: r["labels"].get("severity") for r in _rules() if r["labels"].get("severity") not in routed}
    assert not unrouted


def test_alert_rules_use_only_contract_series_names() -> None:
    known = {name for spec in METRICS for name in (*spec.series_names, spec.native_series_name) if name}
    metric_name = re.compile(r"\b(?:circuit_breaker|event_bus|otel_trading)_[a-z_]+\b")
    used = {m for rule in _rules() for m in metric_name.findall(rule["expr"])}
    assert used, "no contract metric found in the rules at all"
    assert used <= known, f"unknown series in alert rules: {sorted(used - known)}"


def test_target_down_alert_watches_exactly_the_scrape_jobs() -> None:
    rule = next(r for r in _rules() if r["alert"] == "MetricsTargetDown")
    match = re.search(r'up\{job=~"([^"]+)"\}', rule["expr"])
    assert match, rule["expr"]
    assert set(match.group(1).split("|")) == set(_scrape_jobs())


# --- Alertmanager --------------------------------------------------------------------------------


def test_alertmanager_config_passes_amtool_check_config_without_secret_files(tmp_path: Path) -> None:
    # The committed config references /run/secrets/*, which do not exist here.
    assert not Path("/run/secrets/smtp_password").exists()
    res = _run([_amtool(), "check-config", str(AM_CONFIG)], cwd=tmp_path)
    assert res.returncode == 0, _output(res)
    assert "1 templates" in res.stdout, _output(res)


def _route(*labels: str) -> str:
    res = _run([_amtool(), "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels])
    assert res.returncode == 0, _output(res)
    return res.stdout.strip()


def _receiver(name: str) -> dict[str, Any]:
    return next(r for r in _yaml(AM_CONFIG)["receivers"] if r["name"] == name)


def test_critical_alerts_route_to_email_and_slack() -> None:
    receiver = _receiver(_route("alertname=CircuitBreakerTripped", "severity=critical", "name=exchange"))
    assert receiver.get("email_configs") and receiver.get("slack_configs"), receiver


def test_warning_alerts_route_to_slack_only() -> None:
    receiver = _receiver(_route("alertname=EventHandlerErrors", "severity=warning"))
    assert receiver.get("slack_configs") and not receiver.get("email_configs"), receiver


def test_alertmanager_groups_by_alertname_and_breaker_name() -> None:
    assert _yaml(AM_CONFIG)["route"]["group_by"] == ["alertname", "name"]


def test_alertmanager_secrets_are_read_from_files_never_inline() -> None:
    text = AM_CONFIG.read_text()
    config = _yaml(AM_CONFIG)
    assert config["global"]["smtp_auth_password_file"].startswith("/run/secrets/")
    assert config["global"]["slack_api_url_file"].startswith("/run/secrets/")
    assert not re.search(r"^\s*(smtp_auth_password|slack_api_url|api_url)\s*:", text, re.MULTILINE)
    assert "hooks.slack.com" not in text


def test_alertmanager_templates_define_every_template_the_config_uses() -> None:
    used = set(re.findall(r'template "([^"]+)"', AM_CONFIG.read_text()))
    assert used
    for name in sorted(used):
        res = _run(
            [
                _amtool(),
                "template",
                "render",
                f"--template.glob={AM_CONFIG.parent / 'templates' / '*.tmpl'}",
                f'--template.text={{{{ template "{name}" . }}}}',
            ]
        )
        assert res.returncode == 0, f"template {name}: {_output(res)}"


def test_alertmanager_inhibit_rules_name_existing_alerts() -> None:
    names: set[str] = set()
    for rule in _yaml(AM_CONFIG)["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names.update(re.findall(r'alertname="([^"]+)"', matcher))
    assert names
    assert names <= _alert_names()


# --- Grafana provisioning ------------------------------------------------------------------------


def test_grafana_ini_sets_min_refresh_interval_to_5s() -> None:
    ini = configparser.ConfigParser()
    ini.read(GRAFANA / "grafana.ini")
    assert ini.get("dashboards", "min_refresh_interval") == "5s"


def test_provisioned_datasource_is_the_compose_prometheus_with_the_dashboard_uid() -> None:
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["uid"] == dashboard.DATASOURCE_UID


def test_provisioned_datasource_time_interval_equals_the_scrape_interval() -> None:
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["jsonData"]["timeInterval"] == _scrape_jobs()["trading-bot"]["scrape_interval"]


def _bind_mounts(service: str) -> dict[str, Path]:
    """{container path: host path} of a compose service's bind mounts."""
    mounts: dict[str, Path] = {}
    for volume in _services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def test_dashboard_provider_reads_the_directory_compose_mounts_the_dashboards_into() -> None:
    (provider,) = _yaml(GRAFANA / "provisioning" / "dashboards" / "trading.yml")["providers"]
    mounts = _bind_mounts("grafana")
    assert mounts[provider["options"]["path"]] == DASHBOARD_JSON.parent.resolve()


# --- Dashboard -----------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_committed_dashboard_equals_render_dashboard_output() -> None:
    assert DASHBOARD_JSON.read_text() == dashboard.render_dashboard(), (
        "deploy/grafana/dashboards/trading_system.json is stale: run `python tools/regenerate.py`"
    )


def test_render_dashboard_is_deterministic_and_ends_with_one_newline() -> None:
    first, second = dashboard.render_dashboard(), dashboard.render_dashboard()
    assert first == second
    assert first.endswith("}\n")


def _histogram_or_plain(spec: MetricSpec) -> str:
    return spec.prometheus_name + "_bucket" if spec.kind is InstrumentKind.HISTOGRAM else spec.prometheus_name


@pytest.mark.parametrize("spec", METRICS, ids=lambda s: s.prometheus_name)
def test_every_contract_metric_is_queried_by_a_panel(spec: MetricSpec) -> None:
    name = _histogram_or_plain(spec)
    exprs = [expr for _title, expr in dashboard.panel_queries()]
    assert any(re.search(rf"\b{re.escape(name)}\b", expr) for expr in exprs), name


@pytest.mark.parametrize("spec", [s for s in METRICS if s.native_series_name], ids=lambda s: str(s.native_series_name))
def test_every_histogram_is_also_queried_as_a_native_histogram_by_a_panel(spec: MetricSpec) -> None:
    selector = re.compile(rf"\b{re.escape(str(spec.native_series_name))}\{{")
    assert any(selector.search(expr) for _title, expr in dashboard.panel_queries()), spec.native_series_name


def test_panel_queries_list_every_target_of_the_committed_dashboard() -> None:
    committed = [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]
    assert dashboard.panel_queries() == committed


def test_every_panel_query_aggregates_away_scrape_and_scope_labels() -> None:
    bad = [(t, e) for t, e in dashboard.panel_queries() if not re.search(r"\b(sum|max) by \(", e)]
    assert not bad


@pytest.mark.parametrize(
    ("variable", "query"),
    [
        ("job", "label_values(circuit_breaker_state, job)"),
        ("instance", 'label_values(circuit_breaker_state{job=~"$job"}, instance)'),
        ("breaker", 'label_values(circuit_breaker_state{job=~"$job"}, name)'),
        ("event_type", 'label_values(event_bus_events_published_total{job=~"$job"}, event_type)'),
    ],
)
def test_template_variable_is_multi_valued_with_all(variable: str, query: str) -> None:
    var = next(v for v in _dashboard()["templating"]["list"] if v["name"] == variable)
    assert var["query"] == query
    assert var["multi"] is True
    assert var["includeAll"] is True
    # job and instance: dashboard-linter's template-job/-instance rules want ".+" (every series has
    # both labels); a breaker or event type named "" has no label, which only ".*" matches.
    assert var["allValue"] == (".+" if variable in ("job", "instance") else ".*")


def test_panels_use_the_datasource_variable() -> None:
    (ds_var,) = [v for v in _dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["query"] == "prometheus"
    uids = {t["datasource"]["uid"] for p in _panels() for t in p["targets"]}
    assert uids == {f"${{{ds_var['name']}}}"}


def test_breaker_state_panels_map_0_1_2_to_closed_open_half_open() -> None:
    state_panels = [p for p in _panels() if "circuit_breaker_state" in p["targets"][0]["expr"]]
    assert {p["type"] for p in state_panels} == {"stat", "state-timeline"}
    for panel in state_panels:
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        texts = {value: option["text"] for value, option in mapping["options"].items()}
        assert texts == {"0": "CLOSED", "1": "OPEN", "2": "HALF_OPEN"}, panel["title"]


@pytest.mark.parametrize(
    "histogram", [s for s in METRICS if s.kind is InstrumentKind.HISTOGRAM], ids=lambda s: s.prometheus_name
)
def test_histogram_panel_shows_p50_p95_p99_over_buckets_with_rate_interval(histogram: MetricSpec) -> None:
    bucket = histogram.prometheus_name + "_bucket"
    # (Other queries may read one bucket, e.g. the event-loop stalls: count minus le="0.1".)
    exprs = [e for _t, e in dashboard.panel_queries() if bucket in e and e.startswith("histogram_quantile(")]
    quantiles = sorted(float(re.match(r"histogram_quantile\(([\d.]+),", e).group(1)) for e in exprs)  # type: ignore[union-attr]
    assert quantiles == [0.5, 0.95, 0.99]
    assert all("[$__rate_interval]" in e and "le)" in e for e in exprs), exprs
    # ... or the same quantile of the native series, grouped by the same labels less ``le``.
    native = re.escape(histogram.prometheus_name) + r"\{"
    for expr in exprs:
        classic, twin = expr.split(" or ")
        q = re.match(r"histogram_quantile\(([\d.]+),", classic).group(1)  # type: ignore[union-attr]
        by = re.search(r"sum by \(([^)]*)\)", classic).group(1).removesuffix("le").rstrip(", ")  # type: ignore[union-attr]
        rate = rf"\(rate\({native}[^}}]*\}}\[\$__rate_interval\]\)\)\)"
        assert re.fullmatch(rf"histogram_quantile\({q}, sum(?: by \({by}\) )?{rate}", twin) and bool(by) == (
            " by (" in twin
        ), twin


def test_one_row_per_component_and_unique_panel_ids() -> None:
    panels = _dashboard()["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == [
        "Circuit breakers",
        "Event bus",
        "Event loop",
        "otel-trading self-monitoring",
    ]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_concrete_query_replaces_every_grafana_variable() -> None:
    for _title, expr in dashboard.panel_queries():
        concrete = dashboard.concrete_query(expr, rate_interval="30s")
        assert "$" not in concrete, concrete
    assert (
        dashboard.concrete_query('x{name=~"$breaker"}[$__rate_interval]', "2m", {"breaker": "a|b"})
        == 'x{name=~"a|b"}[2m]'
    )


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-trading")
    dashboard.add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_dashboard_subcommand_writes_the_rendered_dashboard(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "trading_system.json"
    assert _cli("dashboard", "--out", str(out)) == 0
    assert out.read_text() == dashboard.render_dashboard()


def test_dashboard_subcommand_check_passes_on_an_up_to_date_file(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text(dashboard.render_dashboard())
    assert _cli("dashboard", "--check", str(out)) == 0


def test_dashboard_subcommand_check_exits_1_on_a_stale_file_and_leaves_it(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    out.write_text("{}\n")
    assert _cli("dashboard", "--check", str(out)) == 1
    assert out.read_text() == "{}\n"


def test_dashboard_subcommand_check_exits_1_on_a_missing_file(tmp_path: Path) -> None:
    assert _cli("dashboard", "--check", str(tmp_path / "absent.json")) == 1


def test_dashboard_subcommand_prints_to_stdout_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installed command writes no file unless asked: nothing appears in the working directory.
    monkeypatch.chdir(tmp_path)
    assert _cli("dashboard") == 0
    assert capsys.readouterr().out == dashboard.render_dashboard()
    assert list(tmp_path.iterdir()) == []


def _regenerate_script() -> Any:
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "tools" / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repo_regenerate_script_targets_the_committed_dashboard() -> None:
    assert _regenerate_script().DASHBOARD.resolve() == DASHBOARD_JSON.resolve()


def test_repo_regenerate_script_check_passes_on_the_committed_files() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "regenerate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_repo_regenerate_script_check_fails_on_drift_and_regenerates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _regenerate_script()
    stale_dashboard = tmp_path / "deploy" / "trading_system.json"
    stale_dashboard.parent.mkdir()
    stale_dashboard.write_text("{}\n")
    readme = tmp_path / "README.md"
    committed_readme = (REPO / "README.md").read_text()
    readme.write_text(committed_readme.replace("| Gauge |", "| Counter |", 1))
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "DASHBOARD", stale_dashboard)
    monkeypatch.setattr(script, "README", readme)
    assert script.main(["--check"]) == 1
    assert stale_dashboard.read_text() == "{}\n"
    assert script.main([]) == 0
    assert stale_dashboard.read_text() == dashboard.render_dashboard()
    assert readme.read_text() == committed_readme
    assert script.main(["--check"]) == 0


# A synthetic exposition of the whole contract: every series, with the labels real scrapes carry,
# counters and histograms advancing on every scrape so that rate() and histogram_quantile() have data.
_LABEL_VALUES = {
    "name": "exchange",
    "from_state": "closed",
    "to_state": "open",
    "event_type": "Tick",
    "bus": "main",
}
_SCOPE = 'otel_scope_name="otel_trading",otel_scope_version="0.1.0"'


def _exposition(scrape: int) -> str:
    lines: list[str] = []
    for spec in METRICS:
        labels = ",".join(f'{lbl}="{_LABEL_VALUES.get(lbl, "x")}"' for lbl in spec.labels) + "," + _SCOPE
        base = spec.prometheus_name
        if spec.kind is InstrumentKind.HISTOGRAM:
            lines.append(f"# TYPE {base} histogram")
            count = 10 * scrape
            for bound in (*(spec.buckets or ()), float("inf")):
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'{base}_bucket{{{labels},le="{le}"}} {count if bound >= 0.05 else 0}')
            lines.append(f"{base}_sum{{{labels}}} {0.05 * count}")
            lines.append(f"{base}_count{{{labels}}} {count}")
        elif spec.kind is InstrumentKind.COUNTER:
            lines.append(f"# TYPE {base} counter")
            lines.append(f"{base}{{{labels}}} {3 * scrape}")
        else:
            lines.append(f"# TYPE {base} gauge")
            lines.append(f"{base}{{{labels}}} {1 + scrape % 2}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _synthetic_exporter() -> Iterator[int]:
    scrapes = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scrapes["n"] += 1
            body = _exposition(scrapes["n"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.integration
def test_every_panel_query_returns_data_from_real_prometheus(tmp_path: Path) -> None:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [],
    }
    with _synthetic_exporter() as port:
        config["scrape_configs"] = [{"job_name": "trading-bot", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
        with realprocs.start_prometheus(tmp_path / "prom", yaml.safe_dump(config)) as prom:
            queries = [(t, dashboard.concrete_query(e, rate_interval="10s")) for t, e in dashboard.panel_queries()]

            def without_data() -> list[tuple[str, str]]:
                return [(title, query) for title, query in queries if not prom.query(query)]

            # A bounded wait for the first scrapes; a query that never returns data fails below.
            with contextlib.suppress(TimeoutError):
                realprocs.wait_until(lambda: not without_data(), timeout=30, what="every panel query")
            empty = without_data()
    assert not empty, f"panel queries with no data: {empty}"


# --- docker-compose.yml (pure-Python lint) -------------------------------------------------------


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in _compose()


def test_compose_has_the_five_services_and_the_otlp_profiles_bot() -> None:
    services = _services()
    assert set(services) == {"bot", "bot-otlp", "otel-collector", "prometheus", "alertmanager", "grafana"}
    assert [s for s, spec in services.items() if spec.get("profiles")] == ["bot-otlp"]
    assert services["bot-otlp"]["profiles"] == ["otlp"]


def test_compose_otlp_bot_pushes_into_prometheus_with_its_receiver_enabled() -> None:
    services = _services()
    env = services["bot-otlp"]["environment"]
    assert env["OTEL_METRICS_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] == "http://prometheus:9090/api/v1/otlp/v1/metrics"
    assert "--web.enable-otlp-receiver" in services["prometheus"]["command"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:v3.")


@pytest.mark.parametrize("service", ["bot", "otel-collector", "prometheus", "alertmanager", "grafana"])
def test_compose_service_builds_or_pins_an_image_tag(service: str) -> None:
    spec = _services()[service]
    if "build" in spec:
        build = spec["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), build
        return
    image = spec["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and "/" not in tag, f"{service}: image {image!r} has no tag"
    assert tag != "latest" and re.search(r"\d", tag), f"{service}: image {image!r} is not pinned"


@pytest.mark.parametrize("service", ["bot", "otel-collector", "prometheus", "alertmanager", "grafana"])
def test_compose_bind_mounts_exist_in_the_repository(service: str) -> None:
    missing = {target: str(source) for target, source in _bind_mounts(service).items() if not source.exists()}
    assert not missing, f"{service}: bind-mount sources missing from the repository: {missing}"


def test_compose_prometheus_command_sets_retention_by_flag() -> None:
    assert "--storage.tsdb.retention.time=15d" in _services()["prometheus"]["command"]


def test_compose_prometheus_command_enables_the_remote_write_receiver() -> None:
    assert "--web.enable-remote-write-receiver" in _services()["prometheus"]["command"]


def test_compose_prometheus_config_flag_points_at_the_mounted_prometheus_yml() -> None:
    command = _services()["prometheus"]["command"]
    (flag,) = [c for c in command if c.startswith("--config.file=")]
    container_path = Path(flag.split("=", 1)[1])
    mounts = _bind_mounts("prometheus")
    host_dir = mounts[str(container_path.parent)]
    assert host_dir / container_path.name == PROM_CONFIG.resolve()


def test_compose_alertmanager_config_flag_points_at_the_mounted_alertmanager_yml() -> None:
    command = _services()["alertmanager"]["command"]
    (flag,) = [c for c in command if c.startswith("--config.file=")]
    container_path = Path(flag.split("=", 1)[1])
    host_dir = _bind_mounts("alertmanager")[str(container_path.parent)]
    assert host_dir / container_path.name == AM_CONFIG.resolve()


def test_compose_service_names_match_the_hosts_the_configs_talk_to() -> None:
    (source,) = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    hosts = {
        "alertmanager",  # prometheus.yml alerting target
        _scrape_jobs()["otel-collector"]["static_configs"][0]["targets"][0].split(":")[0],
        re.sub(r"^https?://|:\d+$", "", source["url"]),
    }
    assert hosts <= set(_services()), hosts - set(_services())


def test_compose_grafana_mounts_grafana_ini_and_provisioning() -> None:
    mounts = _bind_mounts("grafana")
    assert mounts["/etc/grafana/grafana.ini"] == (GRAFANA / "grafana.ini").resolve()
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()


def test_compose_grafana_admin_password_comes_from_a_secret_file() -> None:
    grafana = _services()["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    secret = Path(env["GF_SECURITY_ADMIN_PASSWORD__FILE"]).name
    assert secret in grafana["secrets"]
    assert secret in _compose()["secrets"]


def test_compose_alertmanager_mounts_every_secret_its_config_reads() -> None:
    read = set(re.findall(r"/run/secrets/([\w.-]+)", AM_CONFIG.read_text()))
    assert read
    assert read <= set(_services()["alertmanager"]["secrets"])


def test_compose_secret_files_live_in_the_git_ignored_secrets_directory() -> None:
    secrets_dir = (DEPLOY / "secrets").resolve()
    ignore = [ln.strip() for ln in (secrets_dir / ".gitignore").read_text().splitlines()]
    assert "*" in ignore and "!.gitignore" in ignore
    for name, secret in _compose()["secrets"].items():
        assert (COMPOSE.parent / secret["file"]).resolve().parent == secrets_dir, name


def test_compose_bot_runs_the_demo_bound_to_all_interfaces() -> None:
    command = _services()["bot"]["command"]
    assert command[:2] == ["otel-trading", "demo"]
    assert command[command.index("--addr") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8000"


def test_compose_collector_runs_the_repository_collector_config() -> None:
    mounts = _bind_mounts("otel-collector")
    command = " ".join(_services()["otel-collector"]["command"])
    (container_path,) = re.findall(r"--config=(\S+)", command)
    assert mounts[container_path] == (REPO / "collector" / "otelcol-config.yaml").resolve()


def test_compose_ports_other_than_the_bot_are_published_on_loopback_only() -> None:
    exposed = {
        name: port
        for name, spec in _services().items()
        if name != "bot"
        for port in spec.get("ports", [])
        if not str(port).startswith("127.0.0.1:")
    }
    assert not exposed


def test_compose_collector_image_matches_the_built_distribution_version() -> None:
    # The sidecar image and collector/builder-config.yaml must run the same component versions,
    # or the shared otelcol-config.yaml may use a component name one of them does not know.
    manifest = yaml.safe_load((REPO / "collector" / "builder-config.yaml").read_text())
    contrib = [m["gomod"].split()[-1] for m in manifest["exporters"] if "collector-contrib" in m["gomod"]]
    image = _compose()["services"]["otel-collector"]["image"]
    assert image.rsplit(":", 1)[1] == contrib[0].lstrip("v")
