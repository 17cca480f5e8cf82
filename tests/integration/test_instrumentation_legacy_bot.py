"""``examples/legacy_bot`` auto-instrumented by ``opentelemetry-instrument`` in a real subprocess.

The bot knows nothing about OpenTelemetry. Run under ``opentelemetry-instrument`` with
``OTEL_METRICS_EXPORTER=prometheus``, its ``/metrics`` (served by the SDK's own Prometheus reader)
must carry the guide's names with the values its deterministic scenario implies; run with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_trading``, no trading series at all. In both cases
the bot's own summary must equal that of a plain ``python bot.py`` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_trading.metric_contract import documented_metrics

from ..realprocs import REPO, free_port, missing, running, samples, scrape, spawn, wait_until

BOT_DIR = REPO / "examples" / "legacy_bot"
OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
TRADING_PREFIXES = ("circuit_breaker_", "event_bus_", "otel_trading_")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class BotRun:
    summary: dict[str, Any]
    samples: Samples
    log: str

    def value(self, sample_name: str, /, **labels: str) -> float | None:
        for (sample, sample_labels), value in self.samples.items():
            got = {k: v for k, v in sample_labels if not k.startswith("otel_scope_")}
            if sample == sample_name and got == labels:
                return value
        return None


def _summary(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("SUMMARY ")]
    assert len(lines) == 1, output[-3000:]
    return json.loads(lines[0].removeprefix("SUMMARY "))  # type: ignore[no-any-return]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_instrumented(workdir: Path, disabled: bool, config: str = "") -> BotRun:
    if not OTEL_INSTRUMENT.exists():
        missing(f"opentelemetry-instrument next to {sys.executable}")
    port = free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "otel_trading" if disabled else "",
        "OTEL_TRADING_INSTRUMENT": config,  # empty: the bot's pyproject.toml section applies
        "PYTHONUNBUFFERED": "1",
    }
    argv = [str(OTEL_INSTRUMENT), sys.executable, "bot.py"]
    proc = spawn("legacy-bot-disabled" if disabled else "legacy-bot", argv, workdir, env=env, cwd=BOT_DIR)
    with running(proc):

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"the bot exited early:\n{proc.log_tail()}")
            return "READY" in proc.log_path.read_text(errors="replace")

        try:
            wait_until(ready, timeout=60, what="the legacy bot to finish its scenario")
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n{proc.log_tail()}") from exc
        scraped = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    log = proc.log_path.read_text(errors="replace")
    return BotRun(_summary(log), scraped, log)


@pytest.fixture(scope="module")
def plain_summary() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "bot.py", "--once"],
        cwd=BOT_DIR,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return _summary(done.stdout)


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory: pytest.TempPathFactory) -> BotRun:
    return run_instrumented(tmp_path_factory.mktemp("legacy-bot"), disabled=False)


@pytest.fixture(scope="module")
def disabled(tmp_path_factory: pytest.TempPathFactory) -> BotRun:
    return run_instrumented(tmp_path_factory.mktemp("legacy-bot-disabled"), disabled=True)


# -- instrumented ----------------------------------------------------------------------------------


def test_pybreaker_breakers_export_successes_failures_and_rejections(instrumented: BotRun) -> None:
    assert instrumented.value("circuit_breaker_successes_total", name="binance") == 20
    assert instrumented.value("circuit_breaker_failures_total", name="binance") == 0
    assert instrumented.value("circuit_breaker_failures_total", name="kraken") == 3
    assert instrumented.value("circuit_breaker_rejected_total", name="kraken") == 17


def test_pybreaker_breakers_export_state_and_transition(instrumented: BotRun) -> None:
    assert instrumented.value("circuit_breaker_state", name="binance") == 0
    assert instrumented.value("circuit_breaker_state", name="kraken") == 1
    assert (
        instrumented.value(
            "circuit_breaker_transitions_total", name="kraken", from_state="closed", to_state="open"
        )
        == 1
    )


def test_pybreaker_latency_histogram_counts_calls_that_reached_the_venue(instrumented: BotRun) -> None:
    assert instrumented.value("circuit_breaker_latency_seconds_count", name="binance") == 20
    assert instrumented.value("circuit_breaker_latency_seconds_count", name="kraken") == 3
    # Every simulated round trip sleeps 2 ms: nothing can land in a bucket below 1 ms.
    assert instrumented.value("circuit_breaker_latency_seconds_bucket", name="binance", le="0.001") == 0


def test_the_bots_own_event_bus_exports_published_processed_and_errors(instrumented: BotRun) -> None:
    for topic in ("tick", "fill"):
        assert instrumented.value("event_bus_events_published_total", event_type=topic) == 20
        assert instrumented.value("event_bus_events_processed_total", event_type=topic) == 20
        assert instrumented.value("event_bus_processing_duration_seconds_count", event_type=topic) == 20
    assert instrumented.value("event_bus_handler_errors_total", event_type="tick") == 1


def test_the_bots_own_event_bus_exports_subscribers_and_queue_size(instrumented: BotRun) -> None:
    assert instrumented.value("event_bus_subscribers_gauge", event_type="tick") == 2
    assert instrumented.value("event_bus_subscribers_gauge", event_type="fill") == 1
    assert instrumented.value("event_bus_queue_size", bus="market") == 0


def test_every_metric_name_of_the_guide_is_exported(instrumented: BotRun) -> None:
    exported = {name for name, _ in instrumented.samples}
    expected = {name for spec in documented_metrics() for name in spec.series_names}
    assert expected - exported == set()


def test_instrumented_bot_behaves_exactly_as_the_plain_bot(
    instrumented: BotRun, plain_summary: dict[str, Any]
) -> None:
    assert instrumented.summary == plain_summary


# -- disabled --------------------------------------------------------------------------------------


def test_disabled_instrumentation_exports_no_trading_series(disabled: BotRun) -> None:
    names = {name for name, _ in disabled.samples}
    assert any(name.startswith("python_gc_") for name in names)  # the endpoint itself works
    assert sorted(n for n in names if n.startswith(TRADING_PREFIXES)) == []


def test_disabled_instrumentation_bot_behaves_exactly_as_the_plain_bot(
    disabled: BotRun, plain_summary: dict[str, Any]
) -> None:
    assert disabled.summary == plain_summary


# -- invalid configuration ---------------------------------------------------------------------------


def test_bad_entries_are_reported_once_and_the_rest_is_instrumented(
    tmp_path: Path, plain_summary: dict[str, Any]
) -> None:
    # Old design: one misspelt key switched off all instrumentation (pybreaker included) and
    # opentelemetry-instrument printed the problem list twice, inside two tracebacks; a misspelt
    # module printed nothing at all.
    tinybus = {
        "class": "tinybus:TinyBus",
        "publish": "publish",
        "subscribe": "subscribe",
        "dispatch": "_deliver",
        "queue_size": "_queue.qsize",
    }
    config = {
        "event_buses": [tinybus, {"class": "tinybus:OtherBus", "publsh": "publish"}],
        "breakers": [
            {"class": "tinybuss:Guard", "call": "call", "state": "state", "states": {"closed": "c", "open": "o"}}
        ],
    }
    run = run_instrumented(tmp_path, disabled=False, config=json.dumps(config))
    # The one traceback is the bot's own (its recorder handler's deliberate bug on tick 7).
    assert run.log.count("Traceback") == 1 and "bug in the recorder" in run.log, run.log
    assert run.log.count("unknown key 'publsh'") == 1, run.log
    assert "OTEL_TRADING_INSTRUMENT event_buses[1] (tinybus:OtherBus): unknown key 'publsh'" in run.log
    assert run.log.count("module 'tinybuss' cannot be found") == 1, run.log
    assert "did you mean 'tinybus'?" in run.log
    assert run.summary == plain_summary
    assert run.value("circuit_breaker_successes_total", name="binance") == 20  # pybreaker: instrumented
    assert run.value("event_bus_events_published_total", event_type="tick") == 20  # the good entry too


def test_plain_bot_scenario_is_the_documented_one(plain_summary: dict[str, Any]) -> None:
    assert plain_summary["states"] == {"binance": "closed", "kraken": "open"}
    assert plain_summary["seen"] == {"fills": 20, "ticks": 20}
    assert plain_summary["bus_failures"] == 1


def test_example_readme_gives_the_command_this_test_runs() -> None:
    readme = (BOT_DIR / "README.md").read_text()
    assert "OTEL_METRICS_EXPORTER=prometheus opentelemetry-instrument python bot.py" in readme
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_trading" in readme
