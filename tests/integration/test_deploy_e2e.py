"""The deploy stack end to end with real servers (Grafana itself cannot run here).

Each runs on Debian's Prometheus 2.42 and on Prometheus 3.

1. Every dashboard panel query, variables substituted, returns data from a real Prometheus
   scraping a real demo bot.
2. A breaker forced open in a real bot fires CircuitBreakerTripped in a real Prometheus (rules from
   deploy/, with a short ``for`` in a test copy), routed by the real Alertmanager config (receivers
   swapped for a loopback webhook) to the critical receiver, with the breaker's name.
3. The third export path: the bot pushes OTLP straight into Prometheus 3's OTLP receiver (no
   scrape, no collector), with deploy/prometheus/prometheus.yml's otlp: block: every dashboard query has
   data at Grafana's ``$__rate_interval`` for a 15 s data source (1m), the guide's names arrive
   exactly, and every alert rule evaluates. Once with the SDK's default explicit-bucket histograms
   (classic series), once with ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=
   base2_exponential_bucket_histogram`` (native histograms only: the histogram panels and alerts
   answer from their native side).
4. A fleet: two demo bots as two instances; the per-instance breaker state tells them apart.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_trading.metric_contract import METRICS, documented_metrics
from otel_trading.tooling.dashboard import concrete_query, panel_queries

from ..realprocs import (
    PROMETHEUS_VERSIONS,
    REPO,
    free_port,
    start_alertmanager,
    start_demo_bot,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=PROMETHEUS_VERSIONS, ids=lambda v: f"prometheus{v}")
def prometheus_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


RULES = REPO / "deploy" / "prometheus" / "rules" / "trading_alerts.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def scrape_config(port: int, extra: str = "") -> str:
    return f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: trading-bot
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
{extra}"""


def _unanswered(prom: Any, rate_interval: str, timeout: float = 90) -> set[tuple[str, str]]:
    """The dashboard's queries that returned no data within ``timeout`` (empty: all answered)."""
    queries = panel_queries()
    assert len(queries) >= 12
    pending = {(title, concrete_query(expr, rate_interval=rate_interval)) for title, expr in queries}

    def all_answered() -> bool:
        for item in list(pending):
            if prom.query(item[1]):  # raises on a query error
                pending.discard(item)
        return not pending

    # On time-out the caller's assert lists the queries that never returned data.
    with contextlib.suppress(TimeoutError):
        wait_until(all_answered, timeout, interval=1, what="data for every panel query")
    return pending


def _listing(pending: set[tuple[str, str]]) -> str:
    return "panel queries with no data:\n" + "\n".join(f"{t}: {q}" for t, q in sorted(pending))


def test_every_dashboard_panel_query_returns_data(tmp_path: Path, prometheus_version: str) -> None:
    with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (_, port):
        with start_prometheus(tmp_path / "prom", scrape_config(port), version=prometheus_version) as prom:
            pending = _unanswered(prom, "15s")
    assert not pending, _listing(pending)


PROM_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"


@pytest.mark.parametrize("histograms", ["explicit", "exponential"])
def test_bot_pushing_otlp_into_prometheus_3_answers_every_dashboard_query_and_evaluates_every_rule(
    tmp_path: Path, histograms: str
) -> None:
    # The shipped configuration (its otlp: block), minus the targets that only exist in compose.
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["global"] = {**config.get("global", {}), "evaluation_interval": "1s"}
    config["rule_files"] = ["rules.yml"]
    config.pop("alerting", None)
    config.pop("scrape_configs", None)
    assert "otlp" in config
    port = free_port()
    with start_prometheus(
        tmp_path / "prom",
        yaml.safe_dump(config),
        ["--web.enable-otlp-receiver"],
        files={"rules.yml": RULES.read_text()},
        version="3",
    ) as prom:
        env = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{prom.url}/api/v1/otlp/v1/metrics",
            # A second per push keeps the test short; the 1m rate window below is what matters.
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=bot-1",
        }
        if histograms == "exponential":
            env["OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"] = "base2_exponential_bucket_histogram"
        with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"], env=env, port=port):
            pending = _unanswered(prom, "1m", timeout=120)
            names = {m["metric"]["__name__"] for m in prom.query('{__name__=~"circuit_breaker_.*|event_bus_.*"}')}
            every_name = {m["metric"]["__name__"] for m in prom.query('{__name__=~".+", job="otel-trading-demo"}')}
            up = prom.query('circuit_breaker_state{name="venue-alpha"}')
            rules = prom.api("/api/v1/rules")["groups"]
    assert not pending, _listing(pending)
    documented = {
        n for spec in documented_metrics() for n in spec.series_names if not n.endswith(("_bucket", "_count", "_sum"))
    }
    assert documented <= names, f"missing: {sorted(documented - names)}"
    natives = {str(spec.native_series_name) for spec in METRICS if spec.native_series_name}
    classics = {name for spec in METRICS if spec.native_series_name for name in spec.series_names}
    if histograms == "exponential":
        # Native histograms only: every histogram panel above answered from the native side of its `or`.
        assert natives <= every_name and not classics & every_name, sorted(every_name)
    else:
        assert classics <= every_name and not natives & every_name, sorted(every_name)
    assert up and {r["metric"]["job"] for r in up} == {"otel-trading-demo"}
    assert {r["metric"]["instance"] for r in up} == {"bot-1"}
    health = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    assert health and set(health.values()) == {"ok"}, health


def test_two_bots_are_told_apart_by_the_per_instance_breaker_state(tmp_path: Path, prometheus_version: str) -> None:
    with start_demo_bot(tmp_path / "a", ["--force-open", "venue-alpha"]) as (_, port_a):
        with start_demo_bot(tmp_path / "b") as (_, port_b):
            config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: trading-bot
    static_configs: [{{targets: ['127.0.0.1:{port_a}', '127.0.0.1:{port_b}']}}]
"""
            with start_prometheus(tmp_path / "prom", config, version=prometheus_version) as prom:
                state = next(e for t, e in panel_queries() if t == "Breaker state")
                query = concrete_query(state, variables={"breaker": "venue-alpha"})

                def both() -> dict[str, float]:
                    rows = {r["metric"]["instance"]: float(r["value"][1]) for r in prom.query(query)}
                    return rows if len(rows) == 2 else {}

                by_instance = wait_until(both, 60, interval=0.5, what="venue-alpha's state from both bots")
    assert by_instance == {f"127.0.0.1:{port_a}": 1.0, f"127.0.0.1:{port_b}": 0.0}


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Webhook", (_Webhook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    server.shutdown()
    server.server_close()


def alertmanager_test_copy(url: str) -> str:
    """The committed routing tree, with every receiver delivering to ``url`` and no secrets."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["global"] = {"resolve_timeout": "5m"}
    config.pop("templates", None)
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": url, "send_resolved": False}]
    return yaml.safe_dump(config)


def rules_test_copy() -> str:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if rule.get("alert") == "CircuitBreakerTripped":
                rule["for"] = "2s"
    return yaml.safe_dump(rules)


def test_forced_open_breaker_pages_the_critical_receiver_with_its_name(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]], prometheus_version: str
) -> None:
    url, received = webhook
    critical_receiver = next(
        r["receiver"] for r in yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"]
        if r["matchers"] == ['severity="critical"']
    )  # fmt: skip
    with start_alertmanager(tmp_path / "am", alertmanager_test_copy(url)) as am:
        with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (_, port):
            extra = f"""rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ['{am.url.split("//")[1]}']}}]
"""
            with start_prometheus(
                tmp_path / "prom",
                scrape_config(port, extra),
                files={"rules.yml": rules_test_copy()},
                version=prometheus_version,
            ):

                def tripped() -> list[dict[str, Any]]:
                    return [
                        (payload, alert)
                        for payload in received
                        for alert in payload.get("alerts", [])
                        if alert["labels"].get("alertname") == "CircuitBreakerTripped"
                        and alert["labels"].get("name") == "venue-alpha"
                    ]

                hits = wait_until(tripped, 90, interval=0.5, what="CircuitBreakerTripped at the webhook")
    payload, alert = hits[0]
    assert payload["receiver"] == critical_receiver
    assert alert["labels"]["severity"] == "critical"
    assert alert["status"] == "firing"
    assert "venue-alpha" in alert["annotations"]["summary"]
