"""The doctor's verdicts on answers made up here (no network): each case of issue #15.

``http_get`` is replaced by a table of URL -> answer, so Prometheus' API, the bot's /metrics and
TLS failures are exactly what each test says.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from otel_trading import metric_contract as mc
from otel_trading.tooling.doctor import DoctorOptions, Status, run_doctor
from otel_trading.tooling.doctor.http_client import Response

PROM = "http://127.0.0.1:9090"
BOT = "http://127.0.0.1:8000/metrics"
ELSEWHERE = "http://127.0.0.1:8123/metrics"
REFUSED = Response(None, error="connection refused (nothing listens on that port)")


def exposition(extra_labels: str = "") -> str:
    """Every metric of the contract, once, as the in-process exporter (or a collector) renders it."""
    lines = []
    for spec in mc.METRICS:
        label = {"name": "venue-alpha", "event_type": "Tick", "bus": "main", "label": "name", "loop": "Main"}
        labels = ",".join(f'{k}="{label.get(k, "x")}"' for k in spec.labels) + extra_labels
        if spec.kind is mc.InstrumentKind.HISTOGRAM:
            lines.append(f"# TYPE {spec.prometheus_name} histogram")
            lines.append(f'{spec.prometheus_name}_bucket{{{labels},le="+Inf"}} 1')
            lines.append(f"{spec.prometheus_name}_count{{{labels}}} 1")
            lines.append(f"{spec.prometheus_name}_sum{{{labels}}} 0.001")
        else:
            kind = "counter" if spec.kind is mc.InstrumentKind.COUNTER else "gauge"
            name = spec.prometheus_name.removesuffix("_total")
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{spec.prometheus_name}{{{labels}}} 1")
    return "\n".join(lines) + "\n"


def ok(payload: Any) -> Response:
    return Response(200, json.dumps({"status": "success", "data": payload}).encode())


def target(url: str, health: str = "up", job: str = "trading-bot") -> dict[str, Any]:
    instance = urllib.parse.urlsplit(url).netloc
    return {
        "scrapeUrl": url,
        "health": health,
        "labels": {"job": job, "instance": instance},
        "lastError": "" if health == "up" else "connection refused",
        "scrapeInterval": "15s",
        "lastScrapeDuration": 0.01,
    }


class FakeHttp:
    def __init__(self) -> None:
        self.answers: dict[str, Response] = {}
        self.queries: dict[str, list[dict[str, Any]]] = {}
        self.fetched: list[str] = []

    def __call__(self, url: str, timeout: float, cafile: str | None = None) -> Response:
        self.fetched.append(url)
        parts = urllib.parse.urlsplit(url)
        if parts.path == "/api/v1/query":
            expr = urllib.parse.parse_qs(parts.query)["query"][0]
            for needle, result in self.queries.items():
                if needle in expr:
                    return ok({"resultType": "vector", "result": result})
            return ok({"resultType": "vector", "result": []})
        for prefix, answer in self.answers.items():
            if url.startswith(prefix):
                return answer
        return REFUSED

    def prometheus(self, targets: list[dict[str, Any]], alerts: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.answers[f"{PROM}/api/v1/targets"] = ok({"activeTargets": targets, "droppedTargets": []})
        self.answers[f"{PROM}/api/v1/alerts"] = ok({"alerts": list(alerts)})
        self.answers[f"{PROM}/api/v1/rules"] = ok({"groups": []})
        self.answers[f"{PROM}/api/v1/alertmanagers"] = ok({"activeAlertmanagers": []})


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> FakeHttp:
    fake = FakeHttp()
    monkeypatch.setattr("otel_trading.tooling.doctor.context.http_get", fake)
    return fake


def result(options: DoctorOptions, name: str) -> Any:
    [found] = [r for r in run_doctor(options) if r.name == name]
    return found


def options(**kwargs: Any) -> DoctorOptions:
    return DoctorOptions(**{"metrics_url": BOT, **kwargs})


# -- no --metrics-url -----------------------------------------------------------------------------


def test_without_metrics_url_the_target_prometheus_scrapes_is_used(http: FakeHttp) -> None:
    # Old design: "change the target to 127.0.0.1:8000", where nothing listened, while Prometheus had
    # a healthy target on another port.
    http.answers[ELSEWHERE] = Response(200, exposition().encode())
    http.prometheus([target(ELSEWHERE)])
    http.queries["group by (job, instance)"] = [{"metric": {"job": "trading-bot", "instance": "127.0.0.1:8123"}}]
    opts = options(prometheus_url=PROM, metrics_url_given=False)
    results = {r.name: r for r in run_doctor(opts)}
    assert results["metrics_endpoint"].status is Status.OK
    assert results["metrics_endpoint"].detail.startswith(
        f"no --metrics-url given and nothing answers at the default {BOT}: using {ELSEWHERE}"
    )
    assert results["prometheus_target"].status is Status.OK
    assert all("127.0.0.1:8000" not in r.fix for r in results.values())


def test_a_given_metrics_url_is_never_replaced(http: FakeHttp) -> None:
    http.answers[ELSEWHERE] = Response(200, exposition().encode())
    http.prometheus([target(ELSEWHERE)])
    http.queries["group by (job, instance)"] = [{"metric": {"job": "trading-bot", "instance": "127.0.0.1:8123"}}]
    target_check = result(options(prometheus_url=PROM), "prometheus_target")
    assert target_check.status is Status.FAIL
    assert "where nothing answers" in target_check.detail
    assert f"run the doctor with --metrics-url {ELSEWHERE}" in target_check.fix
    assert "Change the target" not in target_check.fix


def test_without_metrics_url_and_nothing_anywhere_the_fix_says_so(http: FakeHttp) -> None:
    endpoint = result(options(metrics_url_given=False), "metrics_endpoint")
    assert endpoint.status is Status.FAIL
    assert endpoint.fix.startswith(f"no --metrics-url was given, so the doctor tried the default {BOT}")


# -- firing alerts --------------------------------------------------------------------------------


def _alert(alertname: str, severity: str, state: str = "firing", /, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "severity": severity, **labels},
        "annotations": {"summary": f"{alertname} summary", "runbook": f"deploy/README.md#{alertname.lower()}"},
        "state": state,
    }


def test_a_firing_critical_alert_fails_and_names_what_it_is_about(http: FakeHttp) -> None:
    # Old design: "[ ok ] alert_rules ... firing now: CircuitBreakerTripped", with no breaker or target.
    http.answers[BOT] = Response(200, exposition().encode())
    http.prometheus(
        [target(BOT)],
        [
            _alert("EventHandlerErrors", "warning", "firing", event_type="Tick", instance="127.0.0.1:8000"),
            _alert("CircuitBreakerTripped", "critical", "firing", name="venue-alpha", job="bot", instance="bot-1"),
        ],
    )
    firing = result(options(prometheus_url=PROM), "firing_alerts")
    assert firing.status is Status.FAIL
    assert firing.detail.startswith(
        "2 alert(s) firing: CircuitBreakerTripped (critical) for name=venue-alpha, job=bot, instance=bot-1: "
        "CircuitBreakerTripped summary; EventHandlerErrors (warning) for event_type=Tick"
    )
    assert "deploy/README.md#circuitbreakertripped" in firing.fix


def test_a_firing_warning_warns_and_pending_alerts_are_only_mentioned(http: FakeHttp) -> None:
    http.answers[BOT] = Response(200, exposition().encode())
    http.prometheus([target(BOT)], [_alert("EventHandlerErrors", "warning", event_type="Tick")])
    assert result(options(prometheus_url=PROM), "firing_alerts").status is Status.WARN
    http.prometheus([target(BOT)], [_alert("CircuitBreakerTripped", "critical", "pending", name="venue-beta")])
    pending = result(options(prometheus_url=PROM), "firing_alerts")
    assert pending.status is Status.OK
    assert pending.detail.startswith("no alert is firing; pending (firing once their `for` has passed): ")
    assert "name=venue-beta" in pending.detail


# -- container reachability ---------------------------------------------------------------------------


def test_a_loopback_bot_that_prometheus_scrapes_is_fine(http: FakeHttp) -> None:
    # Old design: a warning (so --strict failed) for the documented host set-up.
    http.answers[BOT] = Response(200, exposition().encode())
    http.prometheus([target(BOT)])
    reach = result(options(prometheus_url=PROM), "container_reachable")
    assert reach.status is Status.OK and "Prometheus scrapes it there" in reach.detail
    assert result(options(), "container_reachable").status is Status.WARN  # without Prometheus: unknown
    http.prometheus([target(BOT, health="down")])
    assert result(options(prometheus_url=PROM), "container_reachable").status is Status.WARN


# -- TLS --------------------------------------------------------------------------------------------


def test_an_untrusted_certificate_asks_for_cafile(http: FakeHttp) -> None:
    # Old design: "start the endpoint in the bot ...".
    url = "https://127.0.0.1:8443/metrics"
    http.answers[url] = Response(None, error="TLS error: CERTIFICATE_VERIFY_FAILED")
    endpoint = result(options(metrics_url=url), "metrics_endpoint")
    assert endpoint.status is Status.FAIL
    assert "pass --cafile" in endpoint.fix and "start_metrics_server" not in endpoint.fix
    http.answers[url] = Response(None, error="TLS error: CERTIFICATE_VERIFY_FAILED (IP address mismatch, ...)")
    assert "subjectAltName" in result(options(metrics_url=url), "metrics_endpoint").fix


# -- the Metrics Reference --------------------------------------------------------------------------------


def test_the_metrics_count_is_the_references(http: FakeHttp) -> None:
    # Old design: "all 10 documented metrics" where the reference lists more.
    http.answers[BOT] = Response(200, exposition().encode())
    documented = result(options(), "documented_metrics")
    assert documented.status is Status.OK
    own = len(mc.METRICS) - len(mc.documented_metrics())
    assert documented.detail == (
        f"all 10 of the guide's metrics are present, and {own} of otel-trading's own {own} "
        f"({len(mc.METRICS)} of the {len(mc.METRICS)} in the Metrics Reference)"
    )


# -- the collector path -------------------------------------------------------------------------------


def test_a_collector_exporter_is_recognised_with_its_bots(http: FakeHttp) -> None:
    http.answers[BOT] = Response(200, exposition(',job="trading-bot",instance="bot-1"').encode())
    path = result(options(), "export_path")
    assert path.status is Status.OK
    assert path.detail.startswith("an OpenTelemetry Collector's prometheus exporter")
    assert "trading-bot/bot-1" in path.detail and "otelcol_exporter_send_failed_metric_points" in path.fix
    http.prometheus([target(BOT, job="otel-collector")])
    http.queries["exported_job"] = [{"metric": {"job": "otel-collector", "exported_job": "trading-bot"}}]
    renamed = result(options(prometheus_url=PROM), "export_path")
    assert renamed.status is Status.WARN and "honor_labels: true" in renamed.fix


def test_the_in_process_exporter_is_the_plain_path(http: FakeHttp) -> None:
    http.answers[BOT] = Response(200, exposition().encode())
    path = result(options(), "export_path")
    assert path.status is Status.OK and path.detail.startswith("the bot's own in-process exporter")


# -- push interval ----------------------------------------------------------------------------------


def _pushes(job: str, instance: str, every: float, points: int = 8) -> dict[str, Any]:
    return {"metric": {"job": job, "instance": instance}, "values": [[1000 + i * every, "1"] for i in range(points)]}


def test_a_bot_pushing_less_often_than_the_dashboard_assumes_is_warned_about(http: FakeHttp) -> None:
    http.answers[BOT] = Response(200, exposition().encode())
    http.prometheus([target(BOT)])
    http.queries["target_info[10m]"] = [_pushes("otel-trading-demo", "bot-1", 60), _pushes("fast", "bot-2", 15)]
    check = result(options(prometheus_url=PROM), "push_interval")
    assert check.status is Status.WARN
    assert check.detail.startswith("otel-trading-demo/bot-1 pushes every 60 s")
    assert "fast/bot-2" not in check.detail
    assert "OTEL_METRIC_EXPORT_INTERVAL=15000" in check.fix


def test_bots_pushing_every_15_seconds_and_scraped_bots_are_fine(http: FakeHttp) -> None:
    http.answers[BOT] = Response(200, exposition().encode())
    http.prometheus([target(BOT)])
    http.queries["target_info[10m]"] = [_pushes("otel-trading-demo", "bot-1", 15)]
    assert result(options(prometheus_url=PROM), "push_interval").status is Status.OK


def test_this_environment_pushing_every_minute_is_warned_about(http: FakeHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    http.answers[BOT] = Response(200, exposition().encode())
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "60000")
    check = result(options(), "push_interval")
    assert check.status is Status.WARN
    assert check.detail.startswith("this environment pushes every 60 s")
