"""``otel-trading top`` without a terminal or a network: readings, rates and p99s from two reads, the view, a fleet.

The fleet (``--prometheus``) is read through faked PromQL answers, classic and native histograms alike.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import urllib.parse
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from otel_trading import CircuitBreaker, EventBus
from otel_trading import metric_contract as mc
from otel_trading.exporting import prometheus_reader
from otel_trading.tooling import histograms
from otel_trading.tooling.doctor.context import parse_exposition
from otel_trading.tooling.doctor.http_client import Response
from otel_trading.tooling.top import Frame, PrometheusFleet, frame_between, reading_from_samples, sources
from otel_trading.tooling.top.model import BreakerRow, LoopRow
from otel_trading.tooling.top.view import DASH, format_lag, format_seconds, render

INF = math.inf


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for s in parse_exposition(text)]


def _plain(frame: Frame | None, **kwargs: Any) -> str:
    console = Console(width=200, no_color=True, highlight=False)
    with console.capture() as out:
        console.print(render(frame, plain=True, **kwargs))
    return out.get()


EXPOSITION = """
# TYPE circuit_breaker_state gauge
circuit_breaker_state{name="binance",otel_scope_name="otel_trading"} 1
circuit_breaker_state{name="kraken",otel_scope_name="otel_trading"} 0
# TYPE circuit_breaker_successes_total counter
circuit_breaker_successes_total{name="binance"} {succ}
circuit_breaker_successes_total{name="kraken"} 50
# TYPE circuit_breaker_failures_total counter
circuit_breaker_failures_total{name="binance"} {fail}
circuit_breaker_failures_total{name="kraken"} 0
# TYPE circuit_breaker_rejected_total counter
circuit_breaker_rejected_total{name="binance"} {rej}
# TYPE circuit_breaker_latency_seconds histogram
circuit_breaker_latency_seconds_bucket{name="binance",le="0.1"} {lat_fast}
circuit_breaker_latency_seconds_bucket{name="binance",le="1"} {lat_all}
circuit_breaker_latency_seconds_bucket{name="binance",le="+Inf"} {lat_all}
circuit_breaker_latency_seconds_count{name="binance"} {lat_all}
circuit_breaker_latency_seconds_sum{name="binance"} 1
# TYPE event_bus_events_published_total counter
event_bus_events_published_total{event_type="Tick"} {pub}
# TYPE event_bus_events_processed_total counter
event_bus_events_processed_total{event_type="Tick"} {proc}
# TYPE event_bus_handler_errors_total counter
event_bus_handler_errors_total{event_type="Tick"} 0
# TYPE otel_trading_event_loop_lag_seconds histogram
otel_trading_event_loop_lag_seconds_bucket{loop="MainThread",le="0.001"} {lag_ok}
otel_trading_event_loop_lag_seconds_bucket{loop="MainThread",le="0.1"} {lag_ok}
otel_trading_event_loop_lag_seconds_bucket{loop="MainThread",le="0.5"} {lag_all}
otel_trading_event_loop_lag_seconds_bucket{loop="MainThread",le="+Inf"} {lag_all}
otel_trading_event_loop_lag_seconds_count{loop="MainThread"} {lag_all}
otel_trading_event_loop_lag_seconds_sum{loop="MainThread"} 0.3
"""


def _exposition(**values: float) -> str:
    defaults = dict(succ=10, fail=0, rej=0, lat_fast=10, lat_all=10, pub=100, proc=100, lag_ok=50, lag_all=50)
    defaults.update(values)
    text = EXPOSITION
    for key, value in defaults.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def _reading(at: float, **values: float) -> Any:
    return reading_from_samples(_samples(_exposition(**values)), at)


def test_rates_and_p99s_need_two_reads() -> None:
    first = frame_between(None, _reading(0.0), "bot")
    assert not first.rates_ready
    binance = first.breakers[0]
    assert (binance.name, binance.state) == ("binance", 1)
    assert binance.calls_per_s is None and binance.p99_s is None and binance.rejected_per_s is None
    assert first.events[0].published_per_s is None
    assert first.events[0].backlog == 0  # a level, not a rate: known from one read
    assert first.loops[0].p99_s is None and first.loops[0].stalls == 0
    text = _plain(first)
    assert f"rates need two reads: {DASH}" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["binance"][1:] == ["OPEN", DASH, DASH, DASH, DASH]


def test_rates_failure_share_and_p99_between_two_reads() -> None:
    before = _reading(10.0)
    # 2 s later: 20 more successes, 20 failures, 6 rejected; the 40 new calls all took 0.1..1 s.
    after = _reading(12.0, succ=30, fail=20, rej=6, lat_fast=10, lat_all=50, pub=300, proc=260)
    frame = frame_between(before, after, "bot")
    assert frame.rates_ready
    binance = next(b for b in frame.breakers if b.name == "binance")
    assert binance.calls_per_s == pytest.approx(20.0)
    assert binance.failure_share == pytest.approx(0.5)
    assert binance.rejected_per_s == pytest.approx(3.0)
    # histogram_quantile(0.99) over the difference: rank 39.6 of 40, all in (0.1, 1].
    assert binance.p99_s == pytest.approx(0.1 + 0.9 * 39.6 / 40)
    kraken = next(b for b in frame.breakers if b.name == "kraken")
    assert kraken.calls_per_s == 0 and kraken.failure_share is None and kraken.p99_s is None
    tick = frame.events[0]
    assert (tick.published_per_s, tick.processed_per_s, tick.backlog) == (100.0, 80.0, 40.0)


def test_a_loop_stall_between_two_reads_is_counted_and_its_bucket_is_the_worst() -> None:
    before = _reading(0.0, lag_ok=50, lag_all=50)
    after = _reading(1.0, lag_ok=99, lag_all=100)  # 49 prompt probes, one 0.1..0.5 s late
    loop = frame_between(before, after, "bot").loops[0]
    assert (loop.loop, loop.stalls, loop.new_stalls, loop.worst_s) == ("MainThread", 1, 1, 0.5)
    assert loop.p99_s == pytest.approx(0.1 + 0.4 * (0.99 * 50 - 49) / 1)


def test_a_restarted_bot_shows_no_rate_rather_than_a_negative_one() -> None:
    before = _reading(0.0, succ=500, pub=1000, proc=1000, lag_ok=500, lag_all=500)
    after = _reading(1.0, succ=5, pub=10, proc=10, lag_ok=5, lag_all=5)
    frame = frame_between(before, after, "bot")
    assert frame.breakers[0].calls_per_s is None
    assert frame.events[0].published_per_s is None
    assert frame.loops[0].p99_s is None and frame.loops[0].new_stalls is not None


def test_histogram_quantile_matches_promql_edge_cases() -> None:
    assert histograms.quantile(0.5, ()) is None
    assert histograms.quantile(0.99, ((1.0, 0.0), (INF, 0.0))) is None
    # Everything above the last finite bound: PromQL answers that bound.
    assert histograms.quantile(0.99, ((1.0, 0.0), (10.0, 0.0), (INF, 5.0))) == 10.0
    # Within the first bucket the lower bound is 0.
    assert histograms.quantile(0.5, ((0.001, 10.0), (INF, 10.0))) == pytest.approx(0.0005)
    assert histograms.worst_bound(((0.001, 3.0), (0.5, 3.0), (INF, 4.0))) == INF
    assert histograms.count_above(((0.1, 3.0), (INF, 4.0)), 0.1) == 1.0
    assert histograms.count_above(((0.1, 3.0), (INF, 4.0)), 0.2) is None
    assert histograms.difference(((1.0, 1.0), (INF, 2.0)), ((1.0, 2.0), (INF, 2.0))) is None


def test_plain_view_puts_each_breaker_on_one_row_with_its_state_word() -> None:
    frame = Frame(
        source="bot",
        breakers=(
            BreakerRow("", "a-very-long-breaker-name-for-a-venue", 0, 12.5, 0.0, 0.0, 0.012),
            BreakerRow("", "half", 2, 1.0, 1.0, 4.0, None),
            BreakerRow("", "[red]markup[/red]", 1, None, None, None, None),
        ),
        loops=(LoopRow("", "MainThread", 0.0004, 0.001, 0.0, 0.0),),
        rates_ready=True,
    )
    lines = _plain(frame).splitlines()
    row = {line.split()[0]: line.split() for line in lines if line.split()}
    assert row["a-very-long-breaker-name-for-a-venue"][1:3] == ["CLOSED", "12.5"]
    assert row["half"][1:4] == ["HALF_OPEN", "1.0", "100.0%"]
    assert row["[red]markup[/red]"][1] == "OPEN"  # a name, never rich markup
    assert row["MainThread"][1:] == ["≤", "1.0", "ms", "≤", "1.0", "ms", "0"]


def test_the_live_view_colours_open_and_half_open_breakers() -> None:
    frame = Frame(
        source="bot",
        breakers=(BreakerRow("", "a", 1, 0.0, None, 2.0, None), BreakerRow("", "b", 2, 0.0, None, 0.0, None)),
        rates_ready=True,
    )
    console = Console(width=120, force_terminal=True, color_system="standard")
    with console.capture() as out:
        console.print(render(frame, source="http://bot/metrics", refresh=1.0, now=0))
    text = out.get()
    assert "\x1b[1;37;41m OPEN " in text  # bold white on red
    assert "\x1b[1;30;43m HALF_OPEN " in text  # bold black on yellow
    assert "http://bot/metrics · every 1 s" in text


def test_a_frame_with_nothing_says_so_and_an_error_is_shown() -> None:
    assert "no otel-trading metrics at bot yet" in _plain(Frame(source="bot"))
    assert "cannot reach bot" in _plain(None, status="cannot reach bot")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, DASH), (0.000012, "12 µs"), (0.0249, "24.9 ms"), (2.5, "2.50 s"), (INF, "> 10 s")],
)
def test_durations_read_naturally(seconds: float | None, shown: str) -> None:
    assert format_seconds(seconds) == shown


def test_lag_below_the_first_bucket_is_shown_as_a_bound() -> None:
    assert format_lag(0.0004) == "≤ 1.0 ms"
    assert format_lag(0.3) == "300.0 ms"
    assert format_lag(0.5, bound=True) == "≤ 500.0 ms"


async def test_a_real_exposition_of_the_package_reads_back() -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])
    breaker = CircuitBreaker("venue", meter_provider=provider)
    async with EventBus(meter_provider=provider) as bus:
        bus.subscribe(int, lambda e: None)
        for i in range(5):
            breaker.call(lambda: None)
            await bus.publish(i)
        await asyncio.sleep(0.05)
    reading = reading_from_samples(_samples(generate_latest(registry).decode()), 0.0)
    provider.shutdown()
    assert reading.breakers["venue"].successes == 5 and reading.breakers["venue"].state == 0
    assert reading.events["int"].published == 5 and reading.events["int"].processed == 5
    assert histograms.total(reading.loops["MainThread"]) >= 1


# --- A fleet through Prometheus (PrometheusFleet), against faked query answers -------------------

CLASSIC, NATIVE = "classic:8000", "native-1"
_HISTOGRAMS = (mc.BREAKER_LATENCY, mc.BUS_PROCESSING_DURATION, mc.LOOP_LAG)


def _histogram_read(side: str) -> tuple[mc.MetricSpec, str] | None:
    """(histogram, "classic" or "native") that one side of an ``or`` reads, if any."""
    for spec in _HISTOGRAMS:
        if re.search(rf"\b{spec.prometheus_name}_(bucket|count)\b", side):
            return spec, "classic"
        if re.search(rf"\b{spec.native_series_name}\b(?!_)", side):
            return spec, "native"
    return None


def _shape(side: str) -> str:
    if match := re.match(r"histogram_quantile\(([\d.]+),", side):
        return f"q{match.group(1)}"
    return "recent stalls" if "increase(" in side else "stalls"


class _FakePrometheus:
    """Answers ``PrometheusFleet``'s queries as Prometheus would for two bots: ``classic:8000`` with classic
    histogram series only, ``native-1`` with native ones only (counters and gauges: both). Each side of an
    ``or`` is answered on its own and the two merged as PromQL does (the left side wins a label set)."""

    #: (histogram, kind, shape) -> value, for the bot of that kind.
    HISTOGRAM_VALUES: dict[tuple[str, str, str], float] = {
        ("circuit_breaker_latency_seconds", "classic", "q0.99"): 0.25,
        ("circuit_breaker_latency_seconds", "native", "q0.99"): 0.75,
        ("event_bus_processing_duration_seconds", "classic", "q0.99"): 0.002,
        ("event_bus_processing_duration_seconds", "native", "q0.99"): 0.003,
        ("otel_trading_event_loop_lag_seconds", "classic", "q0.99"): 0.004,
        ("otel_trading_event_loop_lag_seconds", "native", "q0.99"): 0.006,
        ("otel_trading_event_loop_lag_seconds", "classic", "q1"): 0.5,
        ("otel_trading_event_loop_lag_seconds", "native", "q1"): 0.35,
        ("otel_trading_event_loop_lag_seconds", "classic", "stalls"): 3.0,
        # Native stall counts are estimates (interpolated inside the bucket that holds 0.1 s).
        ("otel_trading_event_loop_lag_seconds", "native", "stalls"): 4.6,
        ("otel_trading_event_loop_lag_seconds", "classic", "recent stalls"): 1.0,
        ("otel_trading_event_loop_lag_seconds", "native", "recent stalls"): 2.4,
    }
    LABEL = {"circuit_breaker": "name", "event_bus": "event_type", "otel_trading": "loop"}
    VALUE = {"name": "venue", "event_type": "Tick", "loop": "MainThread"}

    def __init__(self) -> None:
        self.queries: list[str] = []

    def _labels(self, instance: str, side: str) -> dict[str, str]:
        label = next(lbl for prefix, lbl in self.LABEL.items() if re.search(rf"\b{prefix}_", side))
        return {"instance": instance, label: self.VALUE[label]}

    def _side(self, side: str) -> list[dict[str, Any]]:
        read = _histogram_read(side)
        if read is None:  # a counter or gauge: both bots have it
            value = 1.0 if "circuit_breaker_state" in side else 10.0
            return [{"metric": self._labels(i, side), "value": [0, str(value)]} for i in (CLASSIC, NATIVE)]
        spec, kind = read
        value = self.HISTOGRAM_VALUES[(spec.prometheus_name, kind, _shape(side))]
        return [{"metric": self._labels(CLASSIC if kind == "classic" else NATIVE, side), "value": [0, str(value)]}]

    def get(self, url: str, timeout: float) -> Response:
        expr = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
        self.queries.append(expr)
        result: list[dict[str, Any]] = []
        for side in expr.split(" or "):
            seen = [item["metric"] for item in result]
            result += [item for item in self._side(side.strip()) if item["metric"] not in seen]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return Response(200, json.dumps(body).encode())


@pytest.fixture
def fake_prometheus(monkeypatch: pytest.MonkeyPatch) -> _FakePrometheus:
    fake = _FakePrometheus()
    monkeypatch.setattr(sources, "http_get", fake.get)
    return fake


def test_the_fleet_reads_every_histogram_classic_or_native_with_the_same_grouping(
    fake_prometheus: _FakePrometheus,
) -> None:
    PrometheusFleet("http://prometheus:9090", window="2m").poll()
    histogram_queries = [q for q in fake_prometheus.queries if _histogram_read(q)]
    # p99 of breakers, event types and loops, the worst loop bucket, stalls in total and recent.
    assert len(histogram_queries) == 6
    for query in histogram_queries:
        classic, native = query.split(" or ")
        assert _histogram_read(classic) is not None and _histogram_read(classic)[1] == "classic", query  # type: ignore[index]
        assert _histogram_read(native) is not None and _histogram_read(native)[1] == "native", query  # type: ignore[index]
        assert _shape(classic.strip()) == _shape(native.strip()), query
        # Grouped by the same labels on both sides (plus ``le`` on the classic buckets).
        groups = [set(re.findall(r"sum by \(([^)]*)\)", side)) for side in (classic, native)]
        assert {g.removesuffix(", le") for g in groups[0]} == groups[1], query
        assert ("[2m]" in classic) == ("[2m]" in native), query


def test_the_fleet_shows_native_and_classic_bots_side_by_side(fake_prometheus: _FakePrometheus) -> None:
    frame = PrometheusFleet("http://prometheus:9090").poll()
    breakers = {b.instance: b.p99_s for b in frame.breakers}
    assert breakers == {CLASSIC: 0.25, NATIVE: 0.75}
    assert {e.instance: e.p99_s for e in frame.events} == {CLASSIC: 0.002, NATIVE: 0.003}
    loops = {lp.instance: lp for lp in frame.loops}
    assert loops[CLASSIC] == LoopRow(CLASSIC, "MainThread", p99_s=0.004, worst_s=0.5, stalls=3.0, new_stalls=1.0)
    # The native estimate of recent stalls is rounded to a whole stall, as increase()'s extrapolation is.
    assert loops[NATIVE] == LoopRow(NATIVE, "MainThread", p99_s=0.006, worst_s=0.35, stalls=4.6, new_stalls=2.0)
    rows = {tuple(line.split()[:2]): line.split() for line in _plain(frame).splitlines() if line.split()}
    assert rows[(NATIVE, "MainThread")][-1] == "5"  # stalls are shown as whole counts
