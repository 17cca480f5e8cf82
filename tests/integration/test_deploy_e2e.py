"""The deploy stack end to end with real servers (Grafana itself cannot run here).

1. Every dashboard panel query, variables substituted, returns data from a real Prometheus
   scraping a real demo bot.
2. A breaker forced open in a real bot fires CircuitBreakerTripped in a real Prometheus (rules from
   deploy/, with a short ``for`` in a test copy), routed by the real Alertmanager config (receivers
   swapped for a loopback webhook) to the critical receiver, with the breaker's name.
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

from otel_trading.tooling.dashboard import concrete_query, panel_queries

from ..realprocs import REPO, start_alertmanager, start_demo_bot, start_prometheus, wait_until

pytestmark = pytest.mark.integration

RULES = REPO / "deploy" / "prometheus" / "rules" / "trading_alerts.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def scrape_config(port: int, extra: str = "") -> str:
    return f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: trading-bot
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
{extra}"""


def test_every_dashboard_panel_query_returns_data(tmp_path: Path) -> None:
    queries = panel_queries()
    assert len(queries) >= 12
    with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (_, port):
        with start_prometheus(tmp_path / "prom", scrape_config(port)) as prom:
            pending = {(title, concrete_query(expr, rate_interval="15s")) for title, expr in queries}

            def all_answered() -> bool:
                for item in list(pending):
                    if prom.query(item[1]):  # raises on a query error
                        pending.discard(item)
                return not pending

            # On time-out the assert below lists the queries that never returned data.
            with contextlib.suppress(TimeoutError):
                wait_until(all_answered, 90, interval=1, what="data for every panel query")
    assert not pending, "panel queries with no data:\n" + "\n".join(f"{t}: {q}" for t, q in sorted(pending))


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
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
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
                tmp_path / "prom", scrape_config(port, extra), files={"rules.yml": rules_test_copy()}
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
