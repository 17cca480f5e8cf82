"""Native (exponential) histograms and trace exemplars end to end: real bots, collector and Prometheus 3."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..realprocs import (
    REPO,
    Prometheus,
    free_port,
    running,
    spawn,
    start_collector,
    start_demo_bot,
    start_prometheus,
    wait_until,
)
from .example_bots import opentelemetry_instrument
from .test_deploy_e2e import PROM_CONFIG, RULES, _listing, _unanswered

pytestmark = pytest.mark.integration

EXPONENTIAL = {"OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram"}
#: otel-trading's two duration histograms (their Prometheus names; native: no suffix).
HISTOGRAMS = ("circuit_breaker_latency_seconds", "event_bus_processing_duration_seconds")
# The series whose values the count comparisons read: one push must carry all of them.
COMPARED = (
    *HISTOGRAMS,
    "circuit_breaker_successes_total",
    "circuit_breaker_failures_total",
    "event_bus_events_processed_total",
)
TRACED_BOT = REPO / "tests" / "workloads" / "traced_pybreaker_bot.py"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
EXEMPLAR_STORAGE = "--enable-feature=exemplar-storage"


def demo_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The demo pushing OTLP to ``endpoint`` every second, exponential histograms, every call timed."""
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=bot-1",
        # Every call and event timed: histogram counts must equal the counters exactly.
        "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE": "1",
        **EXPONENTIAL,
        **extra,
    }


def otlp_receiver_config(rules: bool) -> str:
    """deploy/prometheus/prometheus.yml (its otlp: block), minus what only exists in compose."""
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert "otlp" in config
    config["global"] = {**config.get("global", {}), "evaluation_interval": "1s"}
    config.pop("alerting", None)
    config.pop("scrape_configs", None)
    config["rule_files"] = ["rules.yml"] if rules else []
    return yaml.safe_dump(config)


@dataclass
class Histograms:
    """What Prometheus holds of the two histograms while the bot runs."""

    native_counts: dict[str, list[dict[str, Any]]]  # histogram_count(<name>) results
    bucket_series: dict[str, list[dict[str, Any]]]  # <name>_bucket series


@dataclass
class LastPush:
    """Counters and histogram counts of the bot's last push, read after the bot has exited."""

    exit_code: int | None
    one_push: bool  # cumulative: every compared series is in the last push (delta: only those that moved)
    timestamps: set[float]  # of every compared series
    breaker_histogram: dict[str, float]
    breaker_calls: dict[str, float]  # successes + failures
    bus_histogram: dict[str, float]
    bus_processed: dict[str, float]


@dataclass
class Run:
    histograms: Histograms
    last: LastPush
    pending: set[tuple[str, str]] = field(default_factory=set)
    rule_health: dict[str, str] = field(default_factory=dict)
    log: str = ""


def _by(prom: Prometheus, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prom.query(expr)}


def _histograms(prom: Prometheus, timeout: float = 90) -> Histograms:
    """Wait (bounded) for native data of both histograms, then read what Prometheus holds."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: all(prom.query(f"histogram_count({n})") for n in HISTOGRAMS), timeout, interval=0.5)
    return Histograms(
        native_counts={n: prom.query(f"histogram_count({n})") for n in HISTOGRAMS},
        bucket_series={n: prom.query(f'{{__name__="{n}_bucket"}}') for n in HISTOGRAMS},
    )


def _last_push(prom: Prometheus, exit_code: int | None, one_push: bool = True, timeout: float = 30) -> LastPush:
    """Once nothing new arrives (the same timestamps on two reads 2 s apart), the last push's counts."""

    def timestamps() -> set[float]:
        return {float(r["value"][1]) for name in COMPARED for r in prom.query(f"timestamp({name})")}

    def settled() -> set[float] | None:
        before = timestamps()
        time.sleep(2)
        after = timestamps()
        return after if after and after == before else None

    # On time-out the test's timestamp assert shows what arrived.
    with contextlib.suppress(TimeoutError):
        wait_until(settled, timeout, interval=0.1, what="the bot's last push")
    return LastPush(
        exit_code=exit_code,
        one_push=one_push,
        timestamps=timestamps(),
        breaker_histogram=_by(prom, "histogram_count(sum by (name) (circuit_breaker_latency_seconds))", "name"),
        breaker_calls=_by(
            prom, "sum by (name) (circuit_breaker_successes_total + circuit_breaker_failures_total)", "name"
        ),
        bus_histogram=_by(
            prom, "histogram_count(sum by (event_type) (event_bus_processing_duration_seconds))", "event_type"
        ),
        bus_processed=_by(prom, "sum by (event_type) (event_bus_events_processed_total)", "event_type"),
    )


def _assert_native(histograms: Histograms, log: str) -> None:
    for name in HISTOGRAMS:
        assert histograms.native_counts[name], f"histogram_count({name}) has no data\n{log}"
        assert not histograms.bucket_series[name], f"classic {name}_bucket series: {histograms.bucket_series[name]}"


def _assert_counts_agree(last: LastPush, log: str) -> None:
    # A clean exit flushed a last push while nothing was recording: a consistent snapshot.
    assert last.exit_code == 0, log
    if last.one_push:
        assert len(last.timestamps) == 1, f"the compared series are not from one push: {sorted(last.timestamps)}"
    # A breaker with no timed call (venue-alpha, forced open: every call rejected) has no histogram point.
    assert last.breaker_calls and sum(last.breaker_calls.values()) > 0, last
    assert {n: last.breaker_histogram.get(n, 0.0) for n in last.breaker_calls} == last.breaker_calls
    assert set(last.breaker_histogram) <= set(last.breaker_calls), last
    assert last.bus_processed and min(last.bus_processed.values()) > 0, last
    assert last.bus_histogram == last.bus_processed


# --- 1. The demo pushes OTLP straight into Prometheus 3 ----------------------------------------------


@pytest.fixture(scope="module")
def otlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The demo with the exponential aggregation pushing OTLP/HTTP into Prometheus 3's OTLP receiver,
    with deploy/'s otlp: block and alert rules; read while it runs and after it exits."""
    tmp = tmp_path_factory.mktemp("otlp")
    with start_prometheus(
        tmp / "prom",
        otlp_receiver_config(rules=True),
        ["--web.enable-otlp-receiver"],
        files={"rules.yml": RULES.read_text()},
        version="3",
    ) as prom:
        env = demo_env(f"{prom.url}/api/v1/otlp/v1/metrics", OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf")
        with start_demo_bot(tmp, ["--force-open", "venue-alpha"], env=env, port=free_port()) as (bot, _):
            histograms = _histograms(prom)
            pending = _unanswered(prom, "1m", timeout=120)

            def evaluated() -> dict[str, str]:
                health = {r["name"]: r["health"] for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]}
                return health if "unknown" not in health.values() else {}

            with contextlib.suppress(TimeoutError):
                wait_until(evaluated, 30, interval=0.5, what="every rule evaluated")
            rule_health = {r["name"]: r["health"] for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]}
            exit_code = bot.stop(timeout=30)
            log = bot.log_tail()
        last = _last_push(prom, exit_code)
    return Run(histograms, last, pending, rule_health, log)


def test_demo_pushing_otlp_with_exponential_aggregation_stores_native_histograms_in_prometheus_3(
    otlp_run: Run,
) -> None:
    _assert_native(otlp_run.histograms, otlp_run.log)


def test_demo_native_histogram_counts_equal_the_breaker_and_bus_counters_of_the_same_push(otlp_run: Run) -> None:
    _assert_counts_agree(otlp_run.last, otlp_run.log)


def test_every_dashboard_query_has_data_with_only_native_histograms_stored(otlp_run: Run) -> None:
    assert not otlp_run.pending, _listing(otlp_run.pending)


def test_every_alert_rule_evaluates_healthy_on_native_histograms(otlp_run: Run) -> None:
    health = otlp_run.rule_health
    assert health and set(health.values()) == {"ok"}, health


# --- 2. Through the collector's remote-write overlay --------------------------------------------------


@pytest.fixture(scope="module", params=["cumulative", "delta"])
def remote_write_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The demo (exponential, ``param`` temporality) pushing OTLP/gRPC to the collector run with the
    remote-write overlay, which writes into Prometheus 3's remote-write receiver."""
    temporality = str(request.param)
    tmp = tmp_path_factory.mktemp(f"remote-write-{temporality}")
    with start_prometheus(
        tmp / "prom", "global: {scrape_interval: 15s}\n", ["--web.enable-remote-write-receiver"], version="3"
    ) as prom:
        env = {"OTELCOL_REMOTE_WRITE_URL": f"{prom.url}/api/v1/write"}
        with start_collector(tmp / "otelcol", overlays=["otelcol-remote-write.yaml"], env=env) as collector:
            bot_env = demo_env(
                collector.grpc_endpoint,
                OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="grpc",
                OTEL_EXPORTER_OTLP_METRICS_INSECURE="true",
                OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=temporality,
            )
            with start_demo_bot(tmp, ["--force-open", "venue-alpha"], env=bot_env, port=free_port()) as (bot, _):
                histograms = _histograms(prom)
                # Several pushes in: the histogram and counter totals have moved past their first points.
                time.sleep(3)
                exit_code = bot.stop(timeout=30)
                log = bot.log_tail()
            # Delta: a series idle in the last interval keeps its previous point's timestamp after
            # deltatocumulative; the totals, read once nothing moves, are still the final ones.
            last = _last_push(prom, exit_code, one_push=temporality == "cumulative")
            log += "\n" + collector.proc.log_tail()
    return Run(histograms, last, log=log)


def test_collector_remote_write_stores_native_histograms_in_prometheus_3(remote_write_run: Run) -> None:
    _assert_native(remote_write_run.histograms, remote_write_run.log)


def test_collector_remote_write_native_histogram_counts_equal_the_counters(remote_write_run: Run) -> None:
    _assert_counts_agree(remote_write_run.last, remote_write_run.log)


# --- 3. Exemplars: a traced bot under opentelemetry-instrument ----------------------------------------


@dataclass
class ExemplarRun:
    trace_ids: set[str]
    own: list[dict[str, Any]]  # /api/v1/query_exemplars results for the bot's own histogram
    breaker: list[dict[str, Any]]  # ... for circuit_breaker_latency_seconds(_bucket)
    breaker_count: list[dict[str, Any]]  # the breaker's latency count: the instrumentation exported it
    own_query: str
    breaker_query: str
    log: str


def _exemplar_trace_ids(results: list[dict[str, Any]]) -> list[str]:
    return [e["labels"].get("trace_id", "") for r in results for e in r["exemplars"]]


@contextlib.contextmanager
def _traced_bot(workdir: Path, endpoint: str, aggregation: dict[str, str]) -> Iterator[tuple[Any, Path]]:
    ids = workdir / "trace_ids.txt"
    env = {
        "OTEL_SERVICE_NAME": "traced-bot",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
        "OTEL_TRADING_INSTRUMENT": "",
        "OTEL_TRADING_HISTOGRAM_SAMPLE_RATE": "1",
        "PYTHONUNBUFFERED": "1",
        **aggregation,
    }
    argv = [str(opentelemetry_instrument()), sys.executable, str(TRACED_BOT), str(ids)]
    with running(spawn("traced-bot", argv, workdir, env=env)) as proc:
        yield proc, ids


@pytest.fixture(scope="module", params=["explicit", "exponential"])
def exemplar_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ExemplarRun:
    """The traced bot pushing OTLP/HTTP into Prometheus 3 with exemplar storage, with the default
    (explicit) or the exponential histogram aggregation; the exemplars Prometheus holds."""
    exponential = request.param == "exponential"
    tmp = tmp_path_factory.mktemp(f"exemplars-{request.param}")
    suffix = "" if exponential else "_bucket"
    own_query = f"bot_order_duration_seconds{suffix}"
    breaker_query = f'circuit_breaker_latency_seconds{suffix}{{name="venue-traced"}}'
    count_query = (
        'histogram_count(circuit_breaker_latency_seconds{name="venue-traced"})'
        if exponential
        else 'circuit_breaker_latency_seconds_count{name="venue-traced"}'
    )
    with start_prometheus(
        tmp / "prom",
        otlp_receiver_config(rules=False),
        [EXEMPLAR_STORAGE, "--web.enable-otlp-receiver"],
        version="3",
    ) as prom:
        start = time.time()

        def exemplars(query: str) -> list[dict[str, Any]]:
            found = prom.api("/api/v1/query_exemplars", query=query, start=str(start - 60), end=str(time.time() + 60))
            return [r for r in found if r["exemplars"]]

        endpoint = f"{prom.url}/api/v1/otlp/v1/metrics"
        with _traced_bot(tmp, endpoint, EXPONENTIAL if exponential else {}) as (bot, ids):
            # The harness first: the bot's own histogram must get exemplars, or nothing below means anything.
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: exemplars(own_query), 60, interval=0.5, what="the bot's own exemplars")
            # Same pushes, same spans: a few more export intervals for the breaker's.
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: exemplars(breaker_query), 10, interval=0.5, what="the breaker's exemplars")
            own, breaker, count = exemplars(own_query), exemplars(breaker_query), prom.query(count_query)
            bot.stop(timeout=30)
            log = bot.log_tail()
        # Read after the bot has stopped: every id it wrote is in the file.
        trace_ids = set(ids.read_text().split()) if ids.exists() else set()
    return ExemplarRun(trace_ids, own, breaker, count, own_query, breaker_query, log)


def test_traced_bot_own_histogram_gets_exemplars_of_its_spans(exemplar_run: ExemplarRun) -> None:
    # Harness check: the SDK, the OTLP receiver and exemplar storage carry a plain API histogram's exemplars.
    got = _exemplar_trace_ids(exemplar_run.own)
    assert got, f"no exemplars for {exemplar_run.own_query}\n{exemplar_run.log}"
    assert exemplar_run.trace_ids, exemplar_run.log
    assert set(got) <= exemplar_run.trace_ids, sorted(set(got) - exemplar_run.trace_ids)


def test_instrumented_pybreaker_latency_gets_exemplars_of_the_calling_spans(exemplar_run: ExemplarRun) -> None:
    assert _exemplar_trace_ids(exemplar_run.own), "harness: the bot's own histogram got no exemplars"
    assert exemplar_run.breaker_count, f"the pybreaker instrumentation exported no latency\n{exemplar_run.log}"
    got = _exemplar_trace_ids(exemplar_run.breaker)
    assert got, (
        f"no exemplars for {exemplar_run.breaker_query} (the bot's own histogram has "
        f"{len(_exemplar_trace_ids(exemplar_run.own))})\n{exemplar_run.log}"
    )
    assert set(got) <= exemplar_run.trace_ids, sorted(set(got) - exemplar_run.trace_ids)


def test_compose_prometheus_stores_the_exemplars_these_tests_query() -> None:
    command = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["command"]
    assert EXEMPLAR_STORAGE in command
    assert "--web.enable-otlp-receiver" in command
    assert "--web.enable-remote-write-receiver" in command
