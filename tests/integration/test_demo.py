"""The main job: ``otel-trading demo`` serves all ten guide metrics and exits cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from otel_trading.metric_contract import documented_metrics

from ..realprocs import family_types, free_port, samples, scrape, start_demo_bot, wait_until


def _scrape_when(port: int, predicate, timeout: float = 40.0) -> str:  # type: ignore[no-untyped-def]
    def attempt() -> str | None:
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        return text if predicate(text) else None

    return wait_until(attempt, timeout, interval=0.5, what="demo metrics")


def _has_all_documented(text: str) -> bool:
    types = family_types(text)
    return all(types.get(m.prometheus_name) == m.prometheus_type for m in documented_metrics())


def test_demo_serves_every_documented_metric_with_its_type(tmp_path: Path) -> None:
    with start_demo_bot(tmp_path) as (_, port):
        text = _scrape_when(port, _has_all_documented)
    assert _has_all_documented(text)


def test_demo_flaky_venue_trips_its_breaker(tmp_path: Path) -> None:
    def tripped(text: str) -> bool:
        return any(
            name == "circuit_breaker_transitions_total" and dict(lbls).get("to_state") == "open" and v >= 1
            for (name, lbls), v in samples(text).items()
        )

    with start_demo_bot(tmp_path) as (_, port):
        text = _scrape_when(port, tripped)
    failures = {
        dict(lbls)["name"]: v for (n, lbls), v in samples(text).items() if n == "circuit_breaker_failures_total"
    }
    assert failures["venue-flaky"] >= 3


def test_demo_exits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    with start_demo_bot(tmp_path) as (proc, port):
        _scrape_when(port, lambda t: "event_bus_events_published_total" in t)
        code = proc.stop(signal.SIGINT, timeout=20)
        log = proc.log_path.read_text()
    assert code == 0, log
    assert "KeyboardInterrupt" not in log
    assert "otel-trading demo: stopped" in log


def test_demo_force_open_holds_a_breaker_open(tmp_path: Path) -> None:
    with start_demo_bot(tmp_path, ["--force-open", "venue-alpha"]) as (_, port):
        text = _scrape_when(port, lambda t: 'circuit_breaker_state{name="venue-alpha"' in t)
    states = {dict(lbls)["name"]: v for (n, lbls), v in samples(text).items() if n == "circuit_breaker_state"}
    assert states["venue-alpha"] == 1


def test_demo_stops_without_losing_a_fill(tmp_path: Path) -> None:
    # Old design: 2 of 5 runs of `demo --duration 3 --tick-rate 200` printed "event bus 'main' is
    # stopped" (a fill published while the bus drained) just before "stopped". The in-process test
    # (tests/unit/test_demo_bot.py) makes the race certain; this one runs the real command.
    for run in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "otel_trading", "demo", "--duration", "2", "--tick-rate", "400", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "otel-trading demo: stopped" in output
        assert "is stopped" not in output and "dropped" not in output, f"run {run}:\n{output}"


def test_a_port_in_use_names_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "otel_trading", "demo", "--port", str(port), "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "--port N, or --port 0 for a free one" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_otlp_http_endpoint_without_its_path_gets_a_hint_at_start_up(tmp_path: Path) -> None:
    # Old design: no word at start-up, then "Failed to export metrics batch code: 404" for ever.
    env = {
        **os.environ,
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_METRIC_EXPORTER": "otlp",  # and a misspelt name, warned about too
    }
    done = subprocess.run(
        [sys.executable, "-m", "otel_trading", "demo", "--duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("has no path") == 1 and "/v1/metrics" in output, output
    assert output.count("did you mean OTEL_METRICS_EXPORTER?") == 1, output
