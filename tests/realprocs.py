"""Start real servers (Prometheus, Alertmanager, the collector, the bot) on free loopback ports.

Every wait is a bounded poll; every process is stopped by its context manager. A missing binary
skips the test on a developer machine and fails it in CI (``CI=true``), where a skip would hide a
broken install step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_outside_ephemeral_range() -> int:
    """A free port below the kernel's ephemeral range, for a server that clients dial while it is down.

    A client retrying a loopback port inside the ephemeral range can be handed that very port as
    its own source port and connect to itself (TCP self-connect), which then keeps the server from
    binding when it comes back.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    import random

    for _ in range(200):
        port = random.randint(max(1024, low // 2), low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def missing(what: str) -> None:
    """Skip locally, fail in CI: a skipped integration test in CI hides a missing install step."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI (run the README test command, which installs it)")
    pytest.skip(f"{what} not available")


def require_binary(name: str, *candidates: str) -> str:
    """Absolute path of ``name`` (on PATH or at one of ``candidates``), else skip/fail."""
    found = shutil.which(name)
    if found:
        return found
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK):
            return c
    missing(f"the `{name}` binary")
    raise AssertionError("unreachable")


def http_get(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate!r}; last error: {last_exc!r}")


def wait_http_ok(url: str, timeout: float = 30.0, proc: ManagedProcess | None = None) -> None:
    def ok() -> bool:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            return http_get(url, timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(ok, timeout, what=url)
    except (TimeoutError, RuntimeError) as exc:
        tail = proc.log_tail() if proc else ""
        raise AssertionError(f"{url} never became ready: {exc}\n{tail}") from exc


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file; stop() terminates, then kills."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- last {n} lines of {self.name} log ---\n" + "\n".join(lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=15)


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it until it exits
    popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=str(cwd or REPO))
    log.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


@contextlib.contextmanager
def running(proc: ManagedProcess) -> Iterator[ManagedProcess]:
    try:
        yield proc
    finally:
        proc.stop()


# --- Prometheus -------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    proc: ManagedProcess

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}{path}{'?' + query if query else ''}", timeout=10)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params} -> {status}: {body[:500]!r}")
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("/api/v1/query", query=expr)["result"]

    def wait_for_series(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        return wait_until(lambda: self.query(expr), timeout, interval=0.5, what=f"PromQL {expr}")


#: The Prometheus lines the deploy tests run against: Debian's 2.42 and 3.x (v0.316.0 = 3.16),
#: built by ``tools/build_go_tools.sh`` (the test command does that; it caches the binaries).
PROMETHEUS_VERSIONS = ("2", "3")
_GO_TOOLS = Path(os.environ.get("OTEL_TRADING_CACHE_DIR") or Path.home() / ".cache" / "otel-trading") / "go-tools"


def _go_tool(env: str, tool: str, version: str = "v0.316.0") -> str:
    path = os.environ.get(env) or str(_GO_TOOLS / f"{tool}-{version}" / tool)
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    missing(f"{tool} {version} ({env}, or `bash tools/build_go_tools.sh {tool}`)")
    raise AssertionError("unreachable")


def pint_binary() -> str:
    return _go_tool("PINT_BINARY", "pint", "v0.87.0")


def prometheus_binary(version: str = "2") -> str:
    if version == "3":
        return _go_tool("PROMETHEUS3_BINARY", "prometheus")
    return require_binary("prometheus", "/usr/bin/prometheus")


def promtool_binary(version: str = "2") -> str:
    if version == "3":
        return _go_tool("PROMTOOL3_BINARY", "promtool")
    return require_binary("promtool", "/usr/bin/promtool")


@contextlib.contextmanager
def start_prometheus(
    workdir: Path,
    config_yaml: str,
    extra_args: Sequence[str] = (),
    files: Mapping[str, str] | None = None,
    version: str = "2",
) -> Iterator[Prometheus]:
    """Real Prometheus (``version`` 2 or 3) on a free loopback port with ``config_yaml`` (plus any
    ``files`` beside it)."""
    binary = prometheus_binary(version)
    workdir.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        p = workdir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(config_yaml)
    port = free_port()
    argv = [
        binary,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        *extra_args,
    ]
    proc = spawn("prometheus", argv, workdir)
    url = f"http://127.0.0.1:{port}"
    with running(proc):
        wait_http_ok(f"{url}/-/ready", timeout=60, proc=proc)
        yield Prometheus(url=url, proc=proc)


# --- Alertmanager -----------------------------------------------------------------------------


@dataclass
class Alertmanager:
    url: str
    proc: ManagedProcess


@contextlib.contextmanager
def start_alertmanager(workdir: Path, config_yaml: str) -> Iterator[Alertmanager]:
    binary = require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(config_yaml)
    port = free_port()
    argv = [
        binary,
        f"--config.file={cfg}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # No gossip: a lone test instance must not open the cluster port.
        "--cluster.listen-address=",
    ]
    proc = spawn("alertmanager", argv, workdir)
    url = f"http://127.0.0.1:{port}"
    with running(proc):
        wait_http_ok(f"{url}/-/ready", timeout=60, proc=proc)
        yield Alertmanager(url=url, proc=proc)


# --- The bot (otel-trading demo) ---------------------------------------------------------------


@contextlib.contextmanager
def start_demo_bot(
    workdir: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[tuple[ManagedProcess, int]]:
    """``otel-trading demo`` in a subprocess on a free port; yields (process, metrics port)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "otel_trading", "demo", "--port", str(port), "--addr", "127.0.0.1", *args]
    proc = spawn("demo-bot", argv, workdir, env=env)
    with running(proc):
        yield proc, port


def scrape(url: str) -> str:
    status, body = http_get(url, timeout=10)
    assert status == 200, f"GET {url} -> {status}"
    return body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse a Prometheus text exposition into {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def family_types(text: str) -> dict[str, str]:
    """{family name as exposed: type}; counters are reported under their ``_total`` name."""
    from prometheus_client.parser import text_string_to_metric_families

    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        types[name] = fam.type
    return types


# --- OpenTelemetry Collector (built from collector/) --------------------------------------------

_collector_path: str | None = None


def collector_binary() -> str:
    """The collector built by collector/build.sh (``OTELCOL_BINARY`` if the test command set it)."""
    global _collector_path
    if _collector_path:
        return _collector_path
    env_path = os.environ.get("OTELCOL_BINARY")
    if env_path and Path(env_path).is_file():
        _collector_path = env_path
        return env_path
    if not shutil.which("go"):
        missing("Go (to build the collector with collector/build.sh)")
    try:
        out = subprocess.run(
            ["bash", str(REPO / "collector" / "build.sh")], check=True, capture_output=True, text=True, timeout=3000
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        missing(f"the collector build ({exc})")
    path = out.stdout.strip().splitlines()[-1]
    _collector_path = path
    return path


@dataclass
class Collector:
    proc: ManagedProcess
    grpc_endpoint: str
    http_endpoint: str
    prometheus_url: str
    health_url: str
    env: dict[str, str]


def collector_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every endpoint variable of collector/otelcol-config.yaml on a free loopback port."""
    env = {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_TELEMETRY_METRICS_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_METRICS_PORT": str(free_port()),
        "OTELCOL_BATCH_TIMEOUT": "100ms",
    }
    env.update(extra or {})
    return env


@contextlib.contextmanager
def start_collector(
    workdir: Path, overlays: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[Collector]:
    """The built collector with collector/otelcol-config.yaml (+ overlay files) on loopback ports."""
    binary = collector_binary()
    full_env = collector_env(env)
    argv = [binary, f"--config={REPO / 'collector' / 'otelcol-config.yaml'}"]
    argv += [f"--config={REPO / 'collector' / o}" for o in overlays]
    proc = spawn("otelcol", argv, workdir, env=full_env)
    health = f"http://{full_env['OTELCOL_HEALTH_ENDPOINT']}/"
    with running(proc):
        wait_http_ok(health, timeout=60, proc=proc)
        yield Collector(
            proc=proc,
            grpc_endpoint=f"http://{full_env['OTELCOL_OTLP_GRPC_ENDPOINT']}",
            http_endpoint=f"http://{full_env['OTELCOL_OTLP_HTTP_ENDPOINT']}",
            prometheus_url=f"http://{full_env['OTELCOL_PROMETHEUS_ENDPOINT']}/metrics",
            health_url=health,
            env=full_env,
        )
