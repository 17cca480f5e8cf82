"""The main job: ``otel-trading demo`` serves all ten guide metrics and exits cleanly on Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

from otel_trading.metric_contract import documented_metrics

from ..realprocs import family_types, samples, scrape, start_demo_bot, wait_until


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
