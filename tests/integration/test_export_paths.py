"""The two export paths against real processes: in-process exporter vs OTLP -> built collector.

Proofs from the collector issue: name/type/label/value parity scraped by a real Prometheus, remote
write into a real Prometheus, swapping backends by configuration alone, and collector faults that
never reach the bot.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from otel_trading.metric_contract import documented_metrics

from ..realprocs import (
    PROMETHEUS_VERSIONS,
    REPO,
    ManagedProcess,
    Prometheus,
    collector_env,
    free_port,
    free_port_outside_ephemeral_range,
    http_get,
    running,
    samples,
    scrape,
    spawn,
    start_collector,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.integration

WORKLOAD = REPO / "tests" / "workloads" / "trading_workload.py"
# Labels that say where a series came from rather than what it measures (documented in collector/README.md).
PROVENANCE = {"job", "instance", "exported_job", "exported_instance", "otel_scope_name", "otel_scope_version",
              "otel_scope_schema_url"}  # fmt: skip


def start_workload(workdir: Path, mode: str, env: dict[str, str]) -> ManagedProcess:
    base = {"OTEL_SERVICE_NAME": "trading-workload", "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    return spawn(f"workload-{env.get('OTEL_METRICS_EXPORTER', 'default')}", [sys.executable, str(WORKLOAD), mode],
                 workdir, env={**base, **env})  # fmt: skip


def wait_log(proc: ManagedProcess, needle: str, timeout: float = 60) -> str:
    def seen() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited early\n{proc.log_tail()}")
        text = proc.log_path.read_text(errors="replace")
        return text if needle in text else None

    return wait_until(seen, timeout, what=f"{needle!r} in {proc.name} log")


def otlp_env(collector_grpc: str) -> dict[str, str]:
    return {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": collector_grpc,
            "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}  # fmt: skip


def series_by_job(prom: Prometheus, name: str, job: str) -> dict[frozenset[tuple[str, str]], float]:
    out = {}
    for r in prom.query(f'{{__name__="{name}", job="{job}"}}'):
        labels = frozenset((k, v) for k, v in r["metric"].items() if k not in PROVENANCE and k != "__name__")
        out[labels] = float(r["value"][1])
    return out


def documented_series_names() -> list[str]:
    return [n for m in documented_metrics() for n in m.series_names]


@pytest.mark.parametrize("version", PROMETHEUS_VERSIONS, ids=lambda v: f"prometheus{v}")
def test_in_process_and_collector_paths_give_identical_series(tmp_path: Path, version: str) -> None:
    # Prometheus 2 keeps `le` as exposed (whole-second bounds are ints on both paths for that);
    # Prometheus 3 normalises `le` to float text at scrape: either way both paths must agree.
    with start_collector(tmp_path / "otelcol") as collector:
        port = free_port()
        inproc = start_workload(tmp_path, "batch", {"OTEL_METRICS_EXPORTER": "prometheus",
                                                    "WORKLOAD_METRICS_PORT": str(port)})  # fmt: skip
        otlp = start_workload(tmp_path, "batch", otlp_env(collector.grpc_endpoint))
        with running(inproc), running(otlp):
            wait_log(inproc, "WORKLOAD DONE")
            wait_log(otlp, "WORKLOAD DONE")
            config = f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: inproc
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
  - job_name: collector
    static_configs: [{{targets: ['{collector.prometheus_url.split("/")[2]}']}}]
"""
            with start_prometheus(tmp_path / "prom", config, version=version) as prom:

                def identical() -> bool:
                    for name in documented_series_names():
                        a, b = series_by_job(prom, name, "inproc"), series_by_job(prom, name, "collector")
                        if not a or a != b:
                            return False
                    return True

                # On time-out the asserts below show the difference.
                with contextlib.suppress(TimeoutError):
                    wait_until(identical, 60, interval=1, what="identical series on both paths")
                for name in documented_series_names():
                    a, b = series_by_job(prom, name, "inproc"), series_by_job(prom, name, "collector")
                    assert a, f"{name} missing on the in-process path"
                    assert a == b, f"{name} differs:\n in-process {a}\n collector  {b}"
                # prometheus_client names a counter family without "_total" in its TYPE line, the
                # collector with it: both are valid exposition, so compare on the stripped name.
                types = {}
                for job in ("inproc", "collector"):
                    meta = prom.api("/api/v1/targets/metadata", match_target=f'{{job="{job}"}}')
                    types[job] = {m["metric"].removesuffix("_total"): m["type"] for m in meta}
                for spec in documented_metrics():
                    family = spec.prometheus_name.removesuffix("_total")
                    assert types["inproc"].get(family) == types["collector"].get(family) == spec.prometheus_type


def test_remote_write_delivers_the_documented_names_to_prometheus(tmp_path: Path) -> None:
    with start_prometheus(tmp_path / "prom", "global: {scrape_interval: 1s}\n",
                          extra_args=["--web.enable-remote-write-receiver"]) as prom:  # fmt: skip
        env = {"OTELCOL_REMOTE_WRITE_URL": f"{prom.url}/api/v1/write"}
        with start_collector(tmp_path / "otelcol", overlays=["otelcol-remote-write.yaml"], env=env) as collector:
            bot = start_workload(tmp_path, "batch", otlp_env(collector.grpc_endpoint))
            with running(bot):
                wait_log(bot, "WORKLOAD DONE")

                def arrived() -> set[str]:
                    names = {r["metric"]["__name__"] for r in
                             prom.query('{__name__=~"circuit_breaker_.+|event_bus_.+"}')}  # fmt: skip
                    return names if set(documented_series_names()) <= names else set()

                names = wait_until(arrived, 60, interval=1, what="remote-written series")
                good = prom.query('circuit_breaker_successes_total{name="venue-good"}')
    assert set(documented_series_names()) <= names
    assert [float(r["value"][1]) for r in good] == [12.0]


@pytest.mark.parametrize("exporter", ["prometheus", "otlp", "console", "none"])
def test_the_same_bot_switches_backend_by_environment_only(tmp_path: Path, exporter: str) -> None:
    def run(env: dict[str, str], check: Any) -> None:
        bot = start_workload(tmp_path, "batch", env)
        with running(bot):
            log = wait_log(bot, "WORKLOAD DONE")
            check(bot, log)
            assert bot.stop(signal.SIGTERM, timeout=20) == 0, bot.log_tail()

    if exporter == "prometheus":
        port = free_port()

        def scraped(bot: ManagedProcess, log: str) -> None:
            text = scrape(f"http://127.0.0.1:{port}/metrics")
            assert samples(text)[("circuit_breaker_successes_total", _labels(text, "venue-good"))] == 12

        run({"OTEL_METRICS_EXPORTER": "prometheus", "WORKLOAD_METRICS_PORT": str(port)}, scraped)
    elif exporter == "otlp":
        with start_collector(tmp_path / "otelcol") as collector:

            def pushed(bot: ManagedProcess, log: str) -> None:
                def twelve() -> bool:
                    text = scrape(collector.prometheus_url)
                    return "circuit_breaker_successes_total{" in text and any(
                        n == "circuit_breaker_successes_total" and dict(lb).get("name") == "venue-good" and v == 12
                        for (n, lb), v in samples(text).items()
                    )

                wait_until(twelve, 30, what="OTLP data at the collector")

            run(otlp_env(collector.grpc_endpoint), pushed)
    elif exporter == "console":
        bot = start_workload(tmp_path, "batch", {"OTEL_METRICS_EXPORTER": "console"})
        with running(bot):
            wait_log(bot, "circuit_breaker.successes", timeout=30)
            assert bot.stop(signal.SIGTERM, timeout=20) == 0, bot.log_tail()
        assert "event_bus.processing.duration" in bot.log_path.read_text()
    else:

        def silent(bot: ManagedProcess, log: str) -> None:
            assert "METRICS http" not in log
            assert "circuit_breaker" not in log

        run({"OTEL_METRICS_EXPORTER": "none"}, silent)


def _labels(text: str, breaker: str) -> tuple[tuple[str, str], ...]:
    for (name, labels), _ in samples(text).items():
        if name == "circuit_breaker_successes_total" and dict(labels).get("name") == breaker:
            return labels
    raise AssertionError(f"no successes series for {breaker}")


def _collector_total(collector_url: str) -> float | None:
    try:
        text = scrape(collector_url)
    except (OSError, AssertionError):
        return None
    for (name, labels), value in samples(text).items():
        if name == "circuit_breaker_successes_total" and dict(labels).get("name") == "venue-steady":
            return value
    return None


def test_collector_down_killed_and_restarted_never_reaches_the_bot(tmp_path: Path) -> None:
    # The bot dials this port while nothing listens: keep it out of the ephemeral range.
    env = collector_env({"OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port_outside_ephemeral_range()}"})
    bot = start_workload(tmp_path, "steady", otlp_env(f"http://{env['OTELCOL_OTLP_GRPC_ENDPOINT']}"))
    with running(bot):
        # 1. Collector down at start: the bot keeps trading.
        wait_until(lambda: bot.popen.poll() is None and bot.log_path.exists(), 5)
        time.sleep(3)
        assert bot.popen.poll() is None, bot.log_tail()
        with start_collector(tmp_path / "otelcol-1", env=env) as collector:
            first = wait_until(lambda: _collector_total(collector.prometheus_url), 30, what="first delivery")
            collector.proc.kill()  # 2. killed mid-run
        time.sleep(3)
        assert bot.popen.poll() is None, bot.log_tail()
        with start_collector(tmp_path / "otelcol-2", env=env) as collector:
            # 3. Restarted: cumulative totals continue from where they were, not from zero.
            second = wait_until(
                lambda: (v := _collector_total(collector.prometheus_url)) and v > first and v,
                30,
                what="delivery after restart",
            )
            assert second > first
            assert bot.stop(signal.SIGTERM, timeout=30) == 0, bot.log_tail()
            report = json.loads(bot.log_path.read_text().strip().splitlines()[-1])
            final = wait_until(
                lambda: _collector_total(collector.prometheus_url) == report["calls"], 20, what="final flush"
            )
    assert final
    log = bot.log_path.read_text()
    assert "Traceback" not in log
    assert report["max_rss_kib"] < 300 * 1024


def test_collector_health_endpoint_reports_ready(tmp_path: Path) -> None:
    with start_collector(tmp_path) as collector:
        status, _ = http_get(collector.health_url)
    assert status == 200
