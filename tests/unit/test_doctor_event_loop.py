"""The doctor's event_loop check, on scrapes made up here: a blocked loop warns, a responsive one is ok."""

from __future__ import annotations

from otel_trading.tooling.doctor.checks import CHECKS, check_event_loop
from otel_trading.tooling.doctor.context import Context, DoctorOptions, Scrape, parse_exposition
from otel_trading.tooling.doctor.http_client import Response
from otel_trading.tooling.doctor.results import Status


def _context(text: str) -> Context:
    ctx = Context(DoctorOptions(metrics_url="http://127.0.0.1:8000/metrics"))
    ctx._cache["scrape"] = Scrape(Response(200, text.encode()), parse_exposition(text))
    return ctx


def _lag(ok: int, stalls: int, worst_le: str = "0.5") -> str:
    lines = ["# TYPE otel_trading_event_loop_lag_seconds histogram"]
    for le in ("0.001", "0.1", "0.25", "0.5", "10", "+Inf"):
        count = ok if le in ("0.001", "0.1") else ok + stalls if float(le) >= float(worst_le) else ok
        lines.append(f'otel_trading_event_loop_lag_seconds_bucket{{loop="MainThread",le="{le}"}} {count}')
    lines.append(f'otel_trading_event_loop_lag_seconds_count{{loop="MainThread"}} {ok + stalls}')
    lines.append('otel_trading_event_loop_lag_seconds_sum{loop="MainThread"} 1.0')
    return "\n".join(lines) + "\n"


def test_the_check_is_part_of_the_pipeline() -> None:
    assert check_event_loop in CHECKS


def test_a_responsive_loop_is_ok() -> None:
    result = check_event_loop(_context(_lag(ok=500, stalls=0)))
    assert result.status is Status.OK
    assert "loop MainThread: 500 probes" in result.detail and "none later than 100 ms" in result.detail


def test_a_blocked_loop_warns_with_the_count_the_longest_and_a_fix() -> None:
    result = check_event_loop(_context(_lag(ok=500, stalls=3)))
    assert result.status is Status.WARN
    assert "more than 100 ms 3 time(s)" in result.detail and "at most 500.0 ms" in result.detail
    assert "asyncio.to_thread" in result.fix and "otel-trading top" in result.fix
    assert result.data["loops"]["MainThread"]["stalls"] == 3


def test_a_stall_beyond_the_last_bucket_stays_valid_json() -> None:
    result = check_event_loop(_context(_lag(ok=10, stalls=1, worst_le="+Inf")))
    assert "> 10 s" in result.detail
    assert result.data["loops"]["MainThread"]["worst_seconds_at_most"] is None


def test_no_lag_series_is_skipped_with_a_hint() -> None:
    bus = '# TYPE event_bus_queue_size gauge\nevent_bus_queue_size{bus="main"} 0\n'
    result = check_event_loop(_context(bus))
    assert result.status is Status.SKIP
    assert "event_loop" in result.detail and "monitor_event_loop()" in result.fix
    assert "no EventBus has started" in check_event_loop(_context("")).detail
