"""Running the example bots of ``examples/`` as a user would: plain, or instrumented, scraped over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..realprocs import free_port, missing, running, samples, scrape, spawn, wait_until

OTEL_INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class BotRun:
    """What an instrumented run left: the bot's own SUMMARY, its scraped samples and its log."""

    summary: dict[str, Any]
    samples: Samples
    log: str

    def value(self, sample_name: str, /, **labels: str) -> float | None:
        for (sample, sample_labels), value in self.samples.items():
            got = {k: v for k, v in sample_labels if not k.startswith("otel_scope_")}
            if sample == sample_name and got == labels:
                return value
        return None

    def label_values(self, prefix: str, label: str) -> set[str]:
        return {
            v for (name, labels), _ in self.samples.items() if name.startswith(prefix) for k, v in labels if k == label
        }


def bot_summary(output: str) -> dict[str, Any]:
    """The one ``SUMMARY {json}`` line every example bot prints."""
    lines = [line for line in output.splitlines() if line.startswith("SUMMARY ")]
    assert len(lines) == 1, output[-3000:]
    return json.loads(lines[0].removeprefix("SUMMARY "))  # type: ignore[no-any-return]


def opentelemetry_instrument() -> Path:
    """The ``opentelemetry-instrument`` next to this Python (skipped locally, failed in CI without it)."""
    if not OTEL_INSTRUMENT.exists():
        missing(f"opentelemetry-instrument next to {sys.executable}")
    return OTEL_INSTRUMENT


def run_plain(bot_dir: Path) -> dict[str, Any]:
    """The SUMMARY of ``python bot.py --once`` with no ``OTEL_*`` variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        [sys.executable, "bot.py", "--once"],
        cwd=bot_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return bot_summary(done.stdout)


def run_instrumented(name: str, bot_dir: Path, argv: Sequence[str], workdir: Path, env: Mapping[str, str]) -> BotRun:
    """Run ``argv`` in ``bot_dir`` with the SDK's Prometheus exporter on a free loopback port (plus
    ``env``), wait for the bot's READY, scrape ``/metrics``."""
    port = free_port()
    full_env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    proc = spawn(name, list(argv), workdir, env=full_env, cwd=bot_dir)
    with running(proc):

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"the bot exited early:\n{proc.log_tail()}")
            return "READY" in proc.log_path.read_text(errors="replace")

        try:
            wait_until(ready, timeout=60, what=f"the {name} bot to finish its scenario")
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\n{proc.log_tail()}") from exc
        scraped = samples(scrape(f"http://127.0.0.1:{port}/metrics"))
    log = proc.log_path.read_text(errors="replace")
    return BotRun(bot_summary(log), scraped, log)
