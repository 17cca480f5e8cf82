"""``otel-trading doctor`` against real endpoints: healthy and broken set-ups, text and JSON output.

In-process tests serve /metrics with the package's own server (or a bare prometheus_client server
for "unrelated metrics"). Integration tests run the demo bot, a real Prometheus (with the repo's
alert rules) and a real Alertmanager, all on loopback, and check what the doctor concludes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from otel_trading import CircuitBreaker, EventBus, start_metrics_server
from otel_trading.exporting import MetricsServer
from otel_trading.metric_contract import METRICS
from otel_trading.tooling.cli import main
from otel_trading.tooling.doctor import CheckResult, DoctorOptions, Status, assess_bind, run_doctor

from ..realprocs import (
    REPO,
    free_port,
    start_alertmanager,
    start_collector,
    start_demo_bot,
    start_prometheus,
    wait_until,
)

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
# Used only if the repo's rules are absent: the guide's two alerts, nothing more.
FALLBACK_RULES = """
groups:
  - name: guide
    rules:
      - alert: CircuitBreakerTripped
        expr: circuit_breaker_state == 1
        for: 5m
      - alert: HighEventProcessingLatency
        expr: >-
          histogram_quantile(0.99, sum by (le) (rate(event_bus_processing_duration_seconds_bucket[5m]))) > 1
        for: 10m
"""
ALERTMANAGER_CONFIG = """
route: {receiver: blackhole}
receivers: [{name: blackhole}]
"""


@dataclass
class Tick:
    price: float


def check(results: list[CheckResult], name: str) -> CheckResult:
    found = [r for r in results if r.name == name]
    assert found, f"no {name} check in {[r.name for r in results]}"
    return found[0]


def doctor(metrics_url: str, **kwargs: object) -> list[CheckResult]:
    return run_doctor(DoctorOptions(metrics_url=metrics_url, timeout=3.0, **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    handle = start_metrics_server(port=0, addr="127.0.0.1")
    yield handle
    handle.close()


def _run_bus(event_types: list[type], bus_name: str = "main") -> EventBus:
    async def drive() -> EventBus:
        async with EventBus(name=bus_name) as bus:
            for event_type in event_types:
                bus.subscribe(event_type, lambda e: None)
                await bus.publish(event_type(1.0))
        return bus

    return asyncio.run(drive())


def _trip(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise ConnectionError("venue down")

    for _ in range(breaker.failure_threshold):
        with contextlib.suppress(ConnectionError):
            breaker.call(boom)


# --- metrics endpoint ---------------------------------------------------------------------------


def test_nothing_listening_fails_the_endpoint_check_and_names_the_port() -> None:
    port = free_port()
    result = check(doctor(f"http://127.0.0.1:{port}/metrics"), "metrics_endpoint")
    assert result.status is Status.FAIL
    assert "connection refused" in result.detail
    assert f"start_metrics_server(port={port})" in result.fix


def test_checks_that_need_a_scrape_are_skipped_when_the_endpoint_is_down() -> None:
    results = doctor(f"http://127.0.0.1:{free_port()}/metrics")
    # hot_paths looks at this environment, not at the bot: it needs no scrape.
    statuses = {r.name: r.status for r in results if r.name not in ("metrics_endpoint", "hot_paths")}
    assert set(statuses) >= {
        "export_path",
        "documented_metrics",
        "container_reachable",
        "prometheus_target",
        "alert_rules",
        "firing_alerts",
        "alertmanager",
        "cardinality",
    }
    assert set(statuses.values()) == {Status.SKIP}


def test_endpoint_with_basic_auth_fails_without_credentials_and_says_how_to_pass_them() -> None:
    with start_metrics_server(port=0, addr="127.0.0.1", basic_auth=("scraper", "s3cret-test-only")) as srv:
        result = check(doctor(srv.url), "metrics_endpoint")
    assert result.status is Status.FAIL
    assert "401" in result.detail and "USER:PASSWORD@" in result.fix


def test_credentials_in_the_metrics_url_are_sent_as_basic_auth() -> None:
    with start_metrics_server(port=0, addr="127.0.0.1", basic_auth=("scraper", "s3cret-test-only")) as srv:
        url = f"http://scraper:s3cret-test-only@127.0.0.1:{srv.port}/metrics"
        results = doctor(url)
    assert check(results, "metrics_endpoint").status is Status.OK
    # The password never appears in the report.
    assert "s3cret" not in json.dumps([r.detail + r.fix for r in results])


# --- documented metrics: which are missing, and why -------------------------------------------


def test_endpoint_serving_only_unrelated_metrics_blames_the_exporter_choice() -> None:
    registry = CollectorRegistry()
    Counter("http_requests", "unrelated app metric", registry=registry).inc()
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        result = check(doctor(f"http://127.0.0.1:{port}/metrics"), "documented_metrics")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert result.status is Status.FAIL
    assert "not otel-trading's exporter" in result.detail
    assert "OTEL_METRICS_EXPORTER" in result.fix
    assert len(result.data["missing"]) == 10


def test_otel_endpoint_without_reporting_components_blames_metrics_enabled_or_the_provider(
    server: MetricsServer,
) -> None:
    CircuitBreaker("silent", metrics_enabled=False).call(lambda: None)
    result = check(doctor(server.url), "documented_metrics")
    assert result.status is Status.FAIL
    assert "metrics_enabled=False" in result.fix and "meter_provider" in result.fix


def test_breakers_without_a_bus_warn_that_no_event_bus_reports(server: MetricsServer) -> None:
    breaker = CircuitBreaker("venue", failure_threshold=1)
    _trip(breaker)
    result = check(doctor(server.url), "documented_metrics")
    assert result.status is Status.WARN
    assert "no EventBus reports here" in result.fix
    assert all(name.startswith("event_bus_") for name in result.data["missing"])


def test_metrics_that_need_events_are_explained_not_failed(server: MetricsServer) -> None:
    breaker = CircuitBreaker("venue")
    bus = _run_bus([Tick])
    result = check(doctor(server.url), "documented_metrics")
    # No breaker has changed state and none was called: those two series do not exist yet.
    assert result.status is Status.WARN
    assert set(result.data["missing"]) == {
        "circuit_breaker_transitions_total",
        "circuit_breaker_latency_seconds",
    }
    assert "first state change" in result.fix
    del breaker, bus


def test_all_documented_metrics_present_is_ok(server: MetricsServer) -> None:
    breaker = CircuitBreaker("venue", failure_threshold=1)
    breaker.call(lambda: None)
    _trip(breaker)
    bus = _run_bus([Tick])
    assert check(doctor(server.url), "documented_metrics").status is Status.OK
    del breaker, bus


# --- container reachability ------------------------------------------------------------------------


def test_loopback_bind_warns_that_containers_cannot_scrape(server: MetricsServer) -> None:
    result = check(doctor(server.url), "container_reachable")
    assert result.status is Status.WARN
    assert "0.0.0.0" in result.fix


def test_a_non_loopback_metrics_url_is_reachable_without_probing() -> None:
    assert assess_bind("10.1.2.3", 8000, loopback=False).status is Status.OK


# --- cardinality --------------------------------------------------------------------------------


def test_cardinality_warns_above_the_threshold_and_names_the_metric(server: MetricsServer) -> None:
    types = [type(f"Event{i}", (Tick,), {}) for i in range(12)]
    bus = _run_bus(types)
    result = check(doctor(server.url, cardinality_threshold=10), "cardinality")
    assert result.status is Status.WARN
    assert "event_bus_events_published_total has 12 label sets" in result.detail
    assert "OTEL_TRADING_DISABLED_METRICS" in result.fix
    del bus


def test_cardinality_reports_folded_label_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRADING_MAX_LABEL_VALUES", "5")
    with start_metrics_server(port=0, addr="127.0.0.1") as srv:
        bus = _run_bus([type(f"Event{i}", (Tick,), {}) for i in range(8)])
        result = check(doctor(srv.url), "cardinality")
        del bus
    assert result.status is Status.WARN
    assert "3 label values were folded into '__overflow__'" in result.detail
    assert result.data["folded_label_values"] == 3


def test_cardinality_within_bounds_is_ok(server: MetricsServer) -> None:
    bus = _run_bus([Tick])
    result = check(doctor(server.url), "cardinality")
    assert result.status is Status.OK
    assert result.data["label_sets"]["event_bus_events_published_total"] == 1
    del bus


# --- CLI: exit status and JSON -------------------------------------------------------------------


def test_cli_exits_1_when_a_check_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--metrics-url", f"http://127.0.0.1:{free_port()}/metrics"]) == 1
    assert "[FAIL] metrics_endpoint" in capsys.readouterr().out


def test_cli_exits_0_with_warnings_only_and_1_under_strict(
    server: MetricsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only a bus reports: documented_metrics and container_reachable warn, nothing fails.
    bus = _run_bus([Tick])
    assert main(["doctor", "--metrics-url", server.url]) == 0
    assert main(["doctor", "--strict", "--metrics-url", server.url]) == 1
    assert "[FAIL]" not in capsys.readouterr().out
    del bus


def test_cli_json_lists_every_check_with_status_detail_and_fix(
    server: MetricsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["doctor", "--json", "--metrics-url", server.url])
    payload = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in payload["checks"]] == [
        "metrics_endpoint",
        "export_path",
        "push_interval",
        "documented_metrics",
        "container_reachable",
        "prometheus_target",
        "alert_rules",
        "firing_alerts",
        "alertmanager",
        "cardinality",
        "event_loop",
        "hot_paths",
    ]
    assert all(set(c) >= {"name", "status", "detail", "fix"} for c in payload["checks"])
    assert payload["healthy"] is (payload["exit_status"] == 0)


@pytest.mark.parametrize("bad", [["--metrics-url", "ftp://x/metrics"], ["--timeout", "0"], ["--timeout", "x"]])
def test_cli_rejects_bad_arguments_with_usage_error(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["doctor", *bad])
    assert exc.value.code == 2


# --- integration: real bot, real Prometheus, real Alertmanager --------------------------------------


def _rule_files() -> dict[str, str]:
    found = {f"rules/{p.name}": p.read_text() for p in sorted(RULES_DIR.glob("*.yml"))}
    return found or {"rules/guide.yml": FALLBACK_RULES}


def _prometheus_config(targets: list[int], alertmanager_port: int | None = None, rules: bool = True) -> str:
    lines = ["global: {scrape_interval: 1s, evaluation_interval: 1s}"]
    if rules:
        lines.append("rule_files: ['rules/*.yml']")
    if alertmanager_port:
        target = f"['127.0.0.1:{alertmanager_port}']"
        lines.append(f"alerting: {{alertmanagers: [{{static_configs: [{{targets: {target}}}]}}]}}")
    static = ", ".join(f"'127.0.0.1:{p}'" for p in targets)
    lines.append(f"scrape_configs: [{{job_name: trading-bot, static_configs: [{{targets: [{static}]}}]}}]")
    return "\n".join(lines) + "\n"


def am_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass
class Stack:
    metrics_url: str
    prometheus_url: str
    alertmanager_url: str | None
    results: list[CheckResult]
    extra: dict[str, int]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("doctor-healthy")
    with (
        start_demo_bot(work) as (_, bot_port),
        start_alertmanager(work / "am", ALERTMANAGER_CONFIG) as am,
        start_prometheus(work / "prom", _prometheus_config([bot_port], am_port(am.url)), files=_rule_files()) as prom,
    ):
        url = f"http://127.0.0.1:{bot_port}/metrics"

        def settled() -> list[CheckResult] | None:
            results = doctor(url, prometheus_url=prom.url, alertmanager_url=am.url)
            ready = {"documented_metrics", "prometheus_target", "alertmanager"}
            return results if all(r.status is Status.OK for r in results if r.name in ready) else None

        results = wait_until(settled, 90, interval=1, what="a healthy doctor run")
        yield Stack(url, prom.url, am.url, results, {})


@pytest.mark.integration
def test_healthy_pipeline_has_no_failed_check(healthy: Stack) -> None:
    failed = [r for r in healthy.results if r.status is Status.FAIL]
    assert failed == []


@pytest.mark.integration
def test_healthy_pipeline_finds_the_bot_as_an_up_prometheus_target(healthy: Stack) -> None:
    result = check(healthy.results, "prometheus_target")
    assert result.status is Status.OK and "job trading-bot, up" in result.detail


@pytest.mark.integration
def test_healthy_pipeline_sees_the_guides_alert_rules_loaded(healthy: Stack) -> None:
    result = check(healthy.results, "alert_rules")
    assert result.status is Status.OK, result
    assert result.data["rules"] >= 2


@pytest.mark.integration
def test_healthy_pipeline_sees_alertmanager_and_prometheus_sending_to_it(healthy: Stack) -> None:
    result = check(healthy.results, "alertmanager")
    assert result.status is Status.OK
    assert f"127.0.0.1:{am_port(healthy.alertmanager_url or '')}" in result.detail


@pytest.mark.integration
def test_healthy_pipeline_counts_the_metrics_reference(healthy: Stack) -> None:
    # Old design: "all 10 documented metrics" where the Metrics Reference lists more.
    result = check(healthy.results, "documented_metrics")
    assert result.detail.startswith("all 10 of the guide's metrics are present, and ")
    assert "in the Metrics Reference" in result.detail and result.data["reference"] == len(METRICS)


@pytest.mark.integration
def test_a_loopback_bot_scraped_by_prometheus_on_this_host_is_reachable(healthy: Stack) -> None:
    # Old design: container_reachable warned even though Prometheus scraped the bot, so --strict
    # failed for the documented host set-up (deploy/host/).
    result = check(healthy.results, "container_reachable")
    assert result.status is Status.OK, result
    assert "Prometheus scrapes it there" in result.detail


@pytest.mark.integration
def test_without_metrics_url_the_doctor_finds_the_bot_prometheus_scrapes(healthy: Stack) -> None:
    # Old design: with nothing at the default 127.0.0.1:8000, it advised changing Prometheus' target
    # to 127.0.0.1:8000, while Prometheus had a healthy target on another port.
    default_port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"}
    env["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(default_port)
    proc = subprocess.run(
        [sys.executable, "-m", "otel_trading", "doctor", "--json", "--prometheus-url", healthy.prometheus_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    endpoint = checks["metrics_endpoint"]
    assert endpoint["status"] == "ok", endpoint
    assert (
        f"nothing answers at the default http://127.0.0.1:{default_port}/metrics: using {healthy.metrics_url}"
        in (endpoint["detail"])
    )
    assert checks["prometheus_target"]["status"] == "ok", checks["prometheus_target"]
    assert all(f":{default_port}" not in c["fix"] for c in checks.values())


@pytest.mark.integration
def test_healthy_pipeline_cli_exits_0_with_json(healthy: Stack) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_trading",
            "doctor",
            "--json",
            "--metrics-url",
            healthy.metrics_url,
            "--prometheus-url",
            healthy.prometheus_url,
            "--alertmanager-url",
            healthy.alertmanager_url or "",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["healthy"] is True


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The bot on one port; Prometheus scrapes another where nothing listens, with no rules or alerting."""
    work = tmp_path_factory.mktemp("doctor-broken")
    wrong_port = free_port()
    with (
        start_demo_bot(work) as (_, bot_port),
        start_prometheus(work / "prom", _prometheus_config([wrong_port], rules=False)) as prom,
    ):
        # Wait until Prometheus has tried the wrong port once, so the target reports "down".
        wait_until(
            lambda: any(t.get("health") == "down" for t in prom.api("/api/v1/targets")["activeTargets"]),
            60,
            what="the wrong-port target to be down",
        )
        url = f"http://127.0.0.1:{bot_port}/metrics"
        results = doctor(url, prometheus_url=prom.url)
        yield Stack(url, prom.url, None, results, {"wrong_port": wrong_port, "bot_port": bot_port})


@pytest.mark.integration
def test_wrong_port_in_the_scrape_config_is_diagnosed(misconfigured: Stack) -> None:
    result = check(misconfigured.results, "prometheus_target")
    assert result.status is Status.FAIL
    assert f"no target for 127.0.0.1:{misconfigured.extra['bot_port']}/metrics" in result.detail
    assert f"127.0.0.1:{misconfigured.extra['wrong_port']}" in result.fix and "wrong port" in result.fix


@pytest.mark.integration
def test_target_down_when_nothing_listens_reports_prometheus_error(misconfigured: Stack) -> None:
    # Point the doctor at the address Prometheus scrapes: the target matches, and it is down.
    url = f"http://127.0.0.1:{misconfigured.extra['wrong_port']}/metrics"
    result = check(doctor(url, prometheus_url=misconfigured.prometheus_url), "prometheus_target")
    assert result.status is Status.FAIL
    assert "target is down" in result.detail and "connection refused" in result.detail
    assert "wrong port in scrape_configs" in result.fix


@pytest.mark.integration
def test_missing_rule_files_fail_the_alert_rules_check(misconfigured: Stack) -> None:
    result = check(misconfigured.results, "alert_rules")
    assert result.status is Status.FAIL
    assert "no alerting rules" in result.detail and "rule_files" in result.fix


@pytest.mark.integration
def test_prometheus_without_alertmanager_fails_the_alertmanager_check(misconfigured: Stack) -> None:
    result = check(misconfigured.results, "alertmanager")
    assert result.status is Status.FAIL
    assert "no Alertmanager" in result.detail


@pytest.mark.integration
def test_a_firing_critical_alert_fails_and_names_the_breaker_and_the_bot(tmp_path: Path) -> None:
    # Old design: "[ ok ] alert_rules ... firing now: CircuitBreakerTripped", without the breaker or
    # the target. The rules are the repository's, with `for` shortened so the alert fires in seconds.
    rules = {k: re.sub(r"(?m)^(\s+for:) \S+$", r"\1 1s", v) for k, v in _rule_files().items()}
    with (
        start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (_, bot_port),
        start_prometheus(tmp_path / "prom", _prometheus_config([bot_port]), files=rules) as prom,
    ):
        url = f"http://127.0.0.1:{bot_port}/metrics"

        def firing() -> CheckResult | None:
            result = check(doctor(url, prometheus_url=prom.url), "firing_alerts")
            return result if result.status is Status.FAIL else None  # only a critical one fails

        result = wait_until(firing, 60, interval=1, what="CircuitBreakerTripped firing")
    assert result.status is Status.FAIL
    about = f"CircuitBreakerTripped (critical) for name=venue-alpha, job=trading-bot, instance=127.0.0.1:{bot_port}"
    assert about in result.detail, result.detail
    assert "Circuit breaker venue-alpha is OPEN" in result.detail
    assert "deploy/README.md#circuitbreakertripped" in result.fix


@pytest.mark.integration
def test_an_untrusted_certificate_asks_for_cafile_and_cafile_fixes_it(tmp_path: Path) -> None:
    # Old design: "start the endpoint in the bot", although it ran and served TLS.
    from .test_endpoint_security import _issue, _openssl

    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=doctor test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp_path,
    )
    _issue(
        "server",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        tmp_path,
    )
    with start_metrics_server(
        port=0, addr="127.0.0.1", certfile=tmp_path / "server.pem", keyfile=tmp_path / "server.key"
    ) as srv:
        CircuitBreaker("venue").call(lambda: None)
        untrusted = check(doctor(srv.url), "metrics_endpoint")
        trusted = check(doctor(srv.url, cafile=str(tmp_path / "ca.pem")), "metrics_endpoint")
    assert untrusted.status is Status.FAIL and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
    assert "pass --cafile" in untrusted.fix and "start_metrics_server" not in untrusted.fix
    assert trusted.status is Status.OK, trusted


@pytest.mark.integration
def test_a_collectors_exporter_is_recognised_and_a_missing_honor_labels_is_caught(tmp_path: Path) -> None:
    # Old design: the doctor knew nothing of the collector path.
    with start_collector(tmp_path / "otelcol") as collector:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": collector.grpc_endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_SERVICE_NAME": "trading-bot",
            "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=bot-7",
        }
        collector_target = collector.prometheus_url.removeprefix("http://").removesuffix("/metrics")
        # The mistake: the collector scraped without honor_labels.
        config = (
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs: [{{job_name: otel-collector, static_configs: [{{targets: ['{collector_target}']}}]}}]\n"
        )
        with (
            start_demo_bot(tmp_path, env=env),
            start_prometheus(tmp_path / "prom", config) as prom,
        ):
            prom.wait_for_series('circuit_breaker_state{exported_job="trading-bot"}', timeout=60)
            result = check(doctor(collector.prometheus_url, prometheus_url=prom.url), "export_path")
    assert result.detail.startswith("an OpenTelemetry Collector's prometheus exporter"), result
    assert "trading-bot/bot-7" in result.detail
    assert result.status is Status.WARN and "exported_job" in result.detail
    assert "honor_labels: true" in result.fix


def test_unreachable_alertmanager_fails_with_its_url() -> None:
    am_url = f"http://127.0.0.1:{free_port()}"
    result = check(doctor(f"http://127.0.0.1:{free_port()}/metrics", alertmanager_url=am_url), "alertmanager")
    assert result.status is Status.FAIL
    assert am_url in result.detail


def test_push_interval_is_measured_on_a_bot_pushing_otlp_into_prometheus_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_trading.tooling.doctor import checks

    with start_prometheus(
        tmp_path / "prom", "global: {scrape_interval: 15s}\n", ["--web.enable-otlp-receiver"], version="3"
    ) as prom:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{prom.url}/api/v1/otlp/v1/metrics",
            "OTEL_METRIC_EXPORT_INTERVAL": "2000",
            "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=bot-1",
        }
        with start_demo_bot(tmp_path, env=env):
            wait_until(
                lambda: len((prom.query("target_info[1m]") or [{}])[0].get("values", [])) >= 4, 60, what="pushes"
            )
            opts = DoctorOptions(metrics_url="http://127.0.0.1:9/metrics", prometheus_url=prom.url)
            fine = next(r for r in run_doctor(opts) if r.name == "push_interval")
            # The same bot, judged against a dashboard that assumed a point every second.
            monkeypatch.setattr(checks, "DASHBOARD_INTERVAL_S", 1.0)
            slow = next(r for r in run_doctor(opts) if r.name == "push_interval")
    assert fine.status is Status.OK, fine
    assert slow.status is Status.WARN and slow.detail.startswith("otel-trading-demo/bot-1 pushes every 2 s"), slow
