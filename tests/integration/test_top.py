"""``otel-trading top`` against the real demo bot: in a real terminal (tmux), ``--once``, and a fleet.

The terminal tests drive Debian's ``tmux`` (installed by the test command): a detached session of
fixed size runs the demo and the view, ``capture-pane`` reads the screen and ``send-keys`` types.
Every wait is bounded; the tmux server (its own socket) is killed after each test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..realprocs import free_port, require_binary, scrape, start_demo_bot, start_prometheus, wait_until

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
BREAKERS = ("venue-alpha", "venue-beta", "venue-flaky")
EVENT_TYPES = ("MarketTick", "OrderPlaced", "OrderFilled")
STATE = r"(CLOSED|OPEN|HALF_OPEN)"
WIDTH, HEIGHT = 150, 50


class Terminal:
    """A tmux server of our own (its own socket), one fixed-size session, windows by name."""

    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux = tmux
        self.socket = socket

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            [self.tmux, "-S", self.socket, *args], capture_output=True, text=True, timeout=30, check=True
        )
        return proc.stdout

    def open(self, window: str, command: str, first: bool = False) -> None:
        # The command runs in a shell: `...; echo EXITED $?` shows how it ended; the sleep keeps the
        # pane (and so what it printed) readable afterwards.
        wrapped = f"{command}; echo {window.upper()}-EXITED $?; sleep 120"
        if first:
            self.run("new-session", "-d", "-s", "t", "-n", window, "-x", str(WIDTH), "-y", str(HEIGHT), wrapped)
        else:
            self.run("new-window", "-t", "t", "-n", window, wrapped)

    def screen(self, window: str) -> str:
        return self.run("capture-pane", "-p", "-t", f"t:{window}")

    def keys(self, window: str, *keys: str) -> None:
        self.run("send-keys", "-t", f"t:{window}", *keys)

    def wait_for(self, window: str, pattern: str, timeout: float = 30.0) -> str:
        """The screen once ``pattern`` (a regex, multiline) is on it."""
        last = [""]

        def shown() -> str | None:
            last[0] = self.screen(window)
            return last[0] if re.search(pattern, last[0], re.M) else None

        try:
            return wait_until(shown, timeout, interval=0.3, what=f"{pattern!r} in tmux window {window}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- screen of {window} ---\n{last[0]}") from None


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    tmux = require_binary("tmux")
    # A short path: a unix socket path may not exceed about 100 bytes.
    workdir = tempfile.mkdtemp(prefix="ot-tmux-")
    term = Terminal(tmux, os.path.join(workdir, "sock"))
    try:
        yield term
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([tmux, "-S", term.socket, "kill-server"], capture_output=True, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def _rows(screen: str) -> dict[str, list[str]]:
    """{first word of a line: its words}."""
    return {line.split()[0]: line.split() for line in screen.splitlines() if line.split()}


def _rates(screen: str) -> list[str]:
    """Every rate cell of the breaker and event-type rows (columns "/S")."""
    rows = _rows(screen)
    cells = []
    for name in BREAKERS:
        cells += [rows[name][2], rows[name][4]]  # calls/s, rejected/s
    for name in EVENT_TYPES:
        cells += [rows[name][1], rows[name][2], rows[name][5]]  # published/s, processed/s, errors/s
    return cells


def _has_rates(screen: str) -> bool:
    rows = _rows(screen)
    return all(name in rows for name in (*BREAKERS, *EVENT_TYPES, "MainThread")) and "—" not in "".join(
        rows["MarketTick"][1:3]
    )


def test_the_demo_points_at_top_which_shows_every_breaker_event_type_and_loop_live_and_quits_on_q(
    tmp_path: Path, terminal: Terminal
) -> None:
    port = free_port()
    demo = f"{shlex.quote(str(BIN / 'otel-trading'))} demo --port {port} --addr 127.0.0.1 2>{tmp_path / 'demo.log'}"
    terminal.open("demo", demo, first=True)
    # The demo says where to look: the URL, then the exact top command.
    screen = terminal.wait_for("demo", r"watch it live \(q quits\): .+ top --url \S+")
    assert f"metrics at http://127.0.0.1:{port}/metrics" in screen
    command = re.search(r"watch it live \(q quits\): (.+ top --url \S+)", screen).group(1)  # type: ignore[union-attr]
    assert command.endswith(f"top --url http://127.0.0.1:{port}/metrics")
    # On a terminal, a status line every few seconds: every breaker's state and events/s.
    status = rf"breakers: venue-alpha {STATE}, venue-beta {STATE}, venue-flaky {STATE} \| [\d,]+ events/s"
    terminal.wait_for("demo", status, timeout=20)

    terminal.open("top", command)
    first = terminal.wait_for("top", r"^\s*MainThread\s", timeout=30)
    for breaker in BREAKERS:
        assert re.search(rf"^\s*{breaker}\s+{STATE}\s", first, re.M), first
    for event_type in EVENT_TYPES:
        assert re.search(rf"^\s*{event_type}\s", first, re.M), first
    assert "Traceback" not in first

    # Rates fill in from the second read, and move as the bot trades.
    def with_rates() -> str | None:
        screen = terminal.screen("top")
        return screen if _has_rates(screen) else None

    earlier = wait_until(with_rates, 20, interval=0.3, what="rates on the screen")
    later = earlier

    def moved() -> bool:
        nonlocal later
        later = terminal.screen("top")
        return _has_rates(later) and _rates(later) != _rates(earlier)

    wait_until(moved, 15, interval=3, what="a rate that changes between two screens")
    for breaker in BREAKERS:
        assert re.search(rf"^\s*{breaker}\s+{STATE}\s", later, re.M), later
    assert re.search(r"^\s*MainThread\s+≤?\s*[\d.]+ (µs|ms|s)\s", later, re.M), later

    terminal.keys("top", "q")
    terminal.wait_for("top", r"^TOP-EXITED 0$", timeout=10)
    terminal.keys("demo", "C-c")
    terminal.wait_for("demo", r"^DEMO-EXITED 0$", timeout=20)
    assert "otel-trading demo: stopped" in terminal.screen("demo")


def test_top_waits_for_an_unreachable_bot_and_fills_in_once_it_answers(tmp_path: Path, terminal: Terminal) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    terminal.open("top", f"{shlex.quote(str(BIN / 'otel-trading'))} top --url {url}", first=True)
    screen = terminal.wait_for("top", r"cannot reach .*connection refused")
    assert "retrying every 1 s" in screen and "Traceback" not in screen
    with start_demo_bot(tmp_path, port=port):
        screen = terminal.wait_for("top", r"^\s*venue-flaky\s", timeout=40)
        assert "cannot reach" not in screen
    terminal.keys("top", "C-c")  # Ctrl-C quits as cleanly as q
    screen = terminal.wait_for("top", r"^TOP-EXITED 0$", timeout=10)
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen


def _top_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_trading", "top", "--once", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_once_prints_one_plain_snapshot_of_a_scraped_endpoint(tmp_path: Path) -> None:
    with start_demo_bot(tmp_path) as (_, port):
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: "otel_trading_event_loop_lag_seconds_bucket" in scrape(url), 30, what="loop lag")
        res = _top_once("--url", url, "--interval", "1.5")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "\x1b[" not in out, "no escape codes in plain output"
    assert all(line == line.rstrip() for line in out.splitlines())
    rows = _rows(out)
    for breaker in BREAKERS:
        # One row per breaker: name, state word, then calls/s, failure share, rejected/s, p99.
        assert rows[breaker][1] in ("CLOSED", "OPEN", "HALF_OPEN"), out
        assert re.fullmatch(r"[\d,]+\.\d", rows[breaker][2]), out
    for event_type in EVENT_TYPES:
        assert event_type in rows, out
    assert float(rows["MarketTick"][1].replace(",", "")) > 10  # ~100 ticks/s
    assert re.search(r"^MainThread\s+(≤ )?[\d.]+ (µs|ms|s)\s", out, re.M), out
    assert "rates need two reads" not in out


def test_once_with_nothing_listening_exits_1_with_the_reason() -> None:
    res = _top_once("--url", f"http://127.0.0.1:{free_port()}/metrics", "--interval", "0", "--timeout", "2")
    assert res.returncode == 1
    assert "cannot reach" in res.stderr and "connection refused" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_once_on_a_fleet_reads_every_bot_through_prometheus_one_row_per_instance(tmp_path: Path) -> None:
    with start_demo_bot(tmp_path / "a", ["--force-open", "venue-alpha"]) as (_, port_a):
        with start_demo_bot(tmp_path / "b") as (_, port_b):
            config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: trading-bot
    static_configs: [{{targets: ['127.0.0.1:{port_a}', '127.0.0.1:{port_b}']}}]
"""
            with start_prometheus(tmp_path / "prom", config) as prom:
                # Both bots scraped at least twice (rates exist) before the one read.
                for series in ("otel_trading_event_loop_lag_seconds_count", "event_bus_events_published_total"):
                    prom.wait_for_series(f"count(count by (instance) (rate({series}[1m]))) == 2")
                res = _top_once("--prometheus", prom.url, "--interval", "0")
    assert res.returncode == 0, res.stderr
    lines = [line.split() for line in res.stdout.splitlines() if line.split()]
    alpha = {line[0]: line[2] for line in lines if len(line) > 2 and line[1] == "venue-alpha"}
    assert alpha == {f"127.0.0.1:{port_a}": "OPEN", f"127.0.0.1:{port_b}": "CLOSED"}, res.stdout
    loops = {line[0] for line in lines if len(line) > 1 and line[1] == "MainThread"}
    assert loops == {f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"}, res.stdout
    ticks = [line for line in lines if len(line) > 2 and line[1] == "MarketTick"]
    # Prometheus' rate over 1m of a few seconds of samples is small, but there from the first read.
    assert len(ticks) == 2 and all(float(t[2].replace(",", "")) > 0 for t in ticks), res.stdout


def test_once_on_a_fleet_reads_native_and_classic_histograms_through_prometheus_3(tmp_path: Path) -> None:
    # A mixed fleet in a real Prometheus 3: one bot scraped (classic histograms), one pushing OTLP with
    # the exponential aggregation (native histograms only). Each bot's p99s and loop row come from its
    # own kind.
    config = """
global: {scrape_interval: 1s, evaluation_interval: 1s}
otlp: {translation_strategy: UnderscoreEscapingWithSuffixes}
scrape_configs:
  - job_name: trading-bot
    static_configs: [{targets: ['127.0.0.1:%d']}]
"""
    native_env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=native-bot",
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
    }
    lag, latency = "otel_trading_event_loop_lag_seconds", "circuit_breaker_latency_seconds"
    with start_demo_bot(tmp_path / "classic") as (_, port):
        with start_prometheus(tmp_path / "prom", config % port, ["--web.enable-otlp-receiver"], version="3") as prom:
            native_env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = f"{prom.url}/api/v1/otlp/v1/metrics"
            with start_demo_bot(tmp_path / "native", env=native_env):
                classic, native = f"127.0.0.1:{port}", "native-bot"
                # Loop probes and venue-alpha calls of each bot, in its own kind, within the 1m rate window.
                for query in (
                    f'sum(rate({lag}_count{{instance="{classic}"}}[1m])) > 0',
                    f'sum(rate({latency}_count{{name="venue-alpha", instance="{classic}"}}[1m])) > 0',
                    f'histogram_count(sum(rate({lag}{{instance="{native}"}}[1m]))) > 0',
                    f'histogram_count(sum(rate({latency}{{name="venue-alpha", instance="{native}"}}[1m]))) > 0',
                ):
                    prom.wait_for_series(query)
                assert not prom.query(f'{{__name__=~".+_bucket", instance="{native}"}}')
                res = _top_once("--prometheus", prom.url, "--interval", "0")
    assert res.returncode == 0, res.stderr
    duration = r"(≤ )?[\d.,]+ (µs|ms|s)"
    for instance in (classic, native):
        # Breaker row: ... calls/s, failure share, rejected/s, then the p99 latency.
        assert re.search(rf"^{re.escape(instance)}\s+venue-alpha\s+{STATE}\s.*\s{duration}$", res.stdout, re.M), (
            res.stdout
        )
        # Loop row: p99 lag, worst bucket, stalls over 100 ms (a whole count).
        loop = rf"^{re.escape(instance)}\s+MainThread\s+{duration}\s+{duration}\s+[\d,]+$"
        assert re.search(loop, res.stdout, re.M), res.stdout


def test_the_runtime_never_loads_rich_and_the_cli_parser_does_not_either() -> None:
    code = (
        "import sys, otel_trading, otel_trading.instrumentation, otel_trading.tooling.cli as cli\n"
        "print('rich' in sys.modules)\n"
        "cli.build_parser().parse_args(['top', '--once'])\n"
        "print('rich' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_the_help_names_the_sources_and_the_keys() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "otel_trading", "top", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    assert "--url" in res.stdout and "--prometheus" in res.stdout and "--once" in res.stdout
    assert "q or Ctrl-C" in " ".join(res.stdout.split())
