"""``examples/legacy_bot`` auto-instrumented by ``opentelemetry-instrument`` in a real subprocess.

The bot knows nothing about OpenTelemetry. Run under ``opentelemetry-instrument`` with
``OTEL_METRICS_EXPORTER=prometheus``, its ``/metrics`` (served by the SDK's own Prometheus reader)
must carry the guide's names with the values its deterministic scenario implies; run with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_trading``, no trading series at all. In both cases
the bot's own summary must equal that of a plain ``python bot.py`` run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_trading.metric_contract import documented_metrics

from ..realprocs import REPO
from .example_bots import BotRun, opentelemetry_instrument, run_instrumented, run_plain

BOT_DIR = REPO / "examples" / "legacy_bot"
TRADING_PREFIXES = ("circuit_breaker_", "event_bus_", "otel_trading_")


def run_legacy_bot(workdir: Path, disabled: bool, config: str = "") -> BotRun:
    argv = [str(opentelemetry_instrument()), sys.executable, "bot.py"]
    env = {
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "otel_trading" if disabled else "",
        "OTEL_TRADING_INSTRUMENT": config,  # empty: the bot's pyproject.toml section applies
    }
    return run_instrumented("legacy-bot-disabled" if disabled else "legacy-bot", BOT_DIR, argv, workdir, env)


@pytest.fixture(scope="module")
def plain_summary() -> dict[str, Any]:
    return run_plain(BOT_DIR)


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory: pytest.TempPathFactory) -> BotRun:
    return run_legacy_bot(tmp_path_factory.mktemp("legacy-bot"), disabled=False)


@pytest.fixture(scope="module")
def disabled(tmp_path_factory: pytest.TempPathFactory) -> BotRun:
    return run_legacy_bot(tmp_path_factory.mktemp("legacy-bot-disabled"), disabled=True)


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
        instrumented.value("circuit_breaker_transitions_total", name="kraken", from_state="closed", to_state="open")
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


def test_instrumented_bot_behaves_exactly_as_the_plain_bot(instrumented: BotRun, plain_summary: dict[str, Any]) -> None:
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
    run = run_legacy_bot(tmp_path, disabled=False, config=json.dumps(config))
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
