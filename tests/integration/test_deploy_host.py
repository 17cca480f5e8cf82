"""deploy/host/: Prometheus and Alertmanager on the host, with Debian's binaries as packaged.

The compose configuration names compose services (host.docker.internal, otel-collector,
alertmanager) and secret files, and its otlp: block needs Prometheus 3: on a host it gives DNS
failures, MetricsTargetDown after 2 minutes, and an Alertmanager that wants /run/secrets and SMTP.
The host variant is checked by the same tools as the compose configs (promtool, amtool), then run:
a real demo bot, the real Prometheus 2.42 with the shipped rules and the real Alertmanager, with only
the ports changed (and the rules' ``for`` shortened) so the test can run beside anything else.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .. import realprocs
from ..realprocs import REPO, free_port, http_get, start_alertmanager, start_demo_bot, start_prometheus, wait_until

pytestmark = pytest.mark.integration

HOST = REPO / "deploy" / "host"
PROM_CONFIG = HOST / "prometheus.yml"
AM_CONFIG = HOST / "alertmanager.yml"
COMPOSE_AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = REPO / "deploy" / "prometheus" / "rules" / "trading_alerts.yml"
BOT_TARGET, AM_TARGET = "127.0.0.1:8000", "127.0.0.1:9093"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)


def _amtool() -> str:
    return realprocs.require_binary("amtool", "/usr/bin/amtool")


def _targets(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    scrape = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    alerting = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    return scrape, alerting


def test_host_prometheus_config_passes_debians_promtool_with_the_shipped_rules(tmp_path: Path) -> None:
    res = _run([realprocs.promtool_binary("2"), "check", "config", str(PROM_CONFIG)], cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "1 rule files found" in out and str(RULES) in out, out


def test_host_prometheus_config_uses_loopback_addresses_only() -> None:
    config = _yaml(PROM_CONFIG)
    assert _targets(config) == ([BOT_TARGET], [AM_TARGET])
    assert "otlp" not in config  # Prometheus 3 only
    assert [job["job_name"] for job in config["scrape_configs"]] == ["trading-bot"]
    assert config["scrape_configs"][0]["scrape_interval"] == "15s"


def test_host_alertmanager_config_passes_amtool_and_needs_no_secret_or_mail_server(tmp_path: Path) -> None:
    res = _run([_amtool(), "check-config", str(AM_CONFIG)], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    text = AM_CONFIG.read_text().split("\nglobal:", 1)[1]  # the settings, not the header comment
    for needle in ("_file", "smtp", "slack", "/run/secrets", "email"):
        assert needle not in text


def test_host_alertmanager_routes_and_inhibits_like_the_compose_one() -> None:
    host, compose = _yaml(AM_CONFIG), _yaml(COMPOSE_AM_CONFIG)
    assert host["inhibit_rules"] == compose["inhibit_rules"]
    names = {"oncall-email-and-slack": "critical", "slack-warnings": "warnings"}

    def shape(route: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in route.items() if k != "routes"}
        out["receiver"] = names.get(out["receiver"], out["receiver"])
        out["routes"] = [shape(r) for r in route.get("routes", [])]
        return out

    assert shape(host["route"]) == shape(compose["route"])
    for severity, receiver in (("critical", "critical"), ("warning", "warnings"), ("info", "warnings")):
        res = _run([_amtool(), "config", "routes", "test", f"--config.file={AM_CONFIG}", f"severity={severity}"])
        assert res.returncode == 0 and res.stdout.strip() == receiver, res.stdout + res.stderr


def test_host_configs_are_documented_with_their_commands() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    for path in ("deploy/host/prometheus.yml", "deploy/host/alertmanager.yml"):
        assert path in readme
    assert "prometheus --config.file=deploy/host/prometheus.yml" in readme
    assert "prometheus-alertmanager --config.file=deploy/host/alertmanager.yml" in readme


def test_host_stack_runs_with_the_real_binaries_and_delivers_a_trip(tmp_path: Path) -> None:
    config_text = PROM_CONFIG.read_text()
    assert config_text.count(f"'{BOT_TARGET}'") == 1 and config_text.count(f"'{AM_TARGET}'") == 1
    # Short `for`s, so the trip reaches Alertmanager in seconds; MetricsTargetDown would too, if a
    # target were down (the compose file's container names made it fire on a host).
    rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 1s", RULES.read_text())
    with start_alertmanager(tmp_path / "am", AM_CONFIG.read_text()) as am:
        with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (bot, bot_port):
            realprocs.wait_http_ok(f"http://127.0.0.1:{bot_port}/metrics", proc=bot)
            prom_config = (
                config_text.replace(f"'{BOT_TARGET}'", f"'127.0.0.1:{bot_port}'")
                .replace(f"'{AM_TARGET}'", f"'{am.url.removeprefix('http://')}'")
                .replace("15s", "1s")
            )
            with start_prometheus(
                tmp_path / "host",
                prom_config,
                files={"../prometheus/rules/trading_alerts.yml": rules},
                version="2",
            ) as prom:

                def tripped_alert() -> list[dict[str, Any]]:
                    status, body = http_get(f"{am.url}/api/v2/alerts", timeout=5)
                    alerts = yaml.safe_load(body) if status == 200 else []
                    return [
                        a
                        for a in alerts
                        if a["labels"].get("alertname") == "CircuitBreakerTripped"
                        and a["labels"].get("name") == "venue-alpha"
                    ]

                [alert] = wait_until(tripped_alert, 90, interval=0.5, what="CircuitBreakerTripped in Alertmanager")
                up = prom.query("up")
                firing = {a["labels"]["alertname"] for a in prom.api("/api/v1/alerts")["alerts"]}
                health = {r["name"]: r["health"] for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]}
                managers = prom.api("/api/v1/alertmanagers")["activeAlertmanagers"]
    assert [r["metric"]["job"] for r in up] == ["trading-bot"] and up[0]["value"][1] == "1"
    assert "MetricsTargetDown" not in firing and "TradingMetricsAbsent" not in firing
    assert health and set(health.values()) == {"ok"}, health
    assert [m["url"] for m in managers] == [f"{am.url}/api/v2/alerts"]
    assert [r["name"] for r in alert["receivers"]] == ["critical"]


def test_unchanged_host_config_starts_debians_prometheus(tmp_path: Path) -> None:
    # As packaged and as shipped: only the listen address is the test's (the bot and Alertmanager
    # ports may be taken here; Prometheus just reports them down).
    binary = realprocs.prometheus_binary("2")
    port = free_port()
    proc = realprocs.spawn(
        "prometheus-host",
        [
            binary,
            f"--config.file={PROM_CONFIG}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path,
    )
    with realprocs.running(proc):
        realprocs.wait_http_ok(f"http://127.0.0.1:{port}/-/ready", timeout=60, proc=proc)
        status, body = http_get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5)
    assert status == 200 and b"CircuitBreakerTripped" in body
