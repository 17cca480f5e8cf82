"""fork() while other threads record: the child must neither hang nor miscount.

A lock another thread holds at ``fork()`` stays held forever in the child. Worker servers
(gunicorn with preload, multiprocessing's "fork" start method) fork a process whose threads may be
in the middle of a breaker call, so every lock those calls take must be renewed in the child
(``otel_trading.recording.rows.fork_safe``). Each child records its own calls, collects, checks the
figures and reports through its exit status; a child that hangs is killed and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_trading import CircuitBreaker, CircuitOpenError
from otel_trading.metric_contract import BREAKER_FAILURES, BREAKER_LATENCY, BREAKER_SUCCESSES
from otel_trading.recording import registry_for

from ..conftest import HOT_PATHS, use_histogram_path, use_hot_path

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns about fork() in a multi-threaded process: forking one is the point here.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FORKS = 20
CHILD_CALLS = 500
CALLING_THREADS = 2
CHILD_TIMEOUT = 10.0

# Child exit statuses.
OK, MISCOUNT, ERROR = 0, 1, 2


class Boom(Exception):
    pass


def ok() -> None:
    return None


def fail() -> None:
    raise Boom()


def _totals(reader: InMemoryMetricReader, name: str) -> tuple[int, int, int]:
    """(successes, failures, latency count) of breaker ``name`` in one collection."""
    data = reader.get_metrics_data()
    found = {BREAKER_SUCCESSES.otel_name: 0, BREAKER_FAILURES.otel_name: 0, BREAKER_LATENCY.otel_name: 0}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name not in found:
                    continue
                for point in metric.data.data_points:
                    if dict(point.attributes) == {"name": name}:
                        found[metric.name] += point.count if metric.name == BREAKER_LATENCY.otel_name else point.value
    return found[BREAKER_SUCCESSES.otel_name], found[BREAKER_FAILURES.otel_name], found[BREAKER_LATENCY.otel_name]


def _in_child(body: Callable[[], str | None], write_fd: int) -> None:
    """Run ``body`` in a forked child and leave with its verdict; never returns into pytest."""
    status = ERROR
    try:
        problem = body()
        status = OK if problem is None else MISCOUNT
        message = problem or "ok"
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
    try:
        os.write(write_fd, message.encode()[:4000])
    finally:
        os._exit(status)


def _wait(pid: int, read_fd: int, timeout: float) -> tuple[int | None, str]:
    """(exit status or None if it had to be killed, message) of child ``pid``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return None, "hung (killed)"
        time.sleep(0.005)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    code = os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode(errors="replace")


def _fork_once(child: Callable[[], str | None]) -> tuple[int | None, str]:
    """Fork a child that runs ``child``: its exit status (None when it hung and was killed), message."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
        os.close(read_fd)
        _in_child(child, write_fd)
    os.close(write_fd)
    return _wait(pid, read_fd, CHILD_TIMEOUT)


def _fork_each(forks: int, child: Callable[[], str | None], pause: float) -> list[str]:
    """Fork ``forks`` times (``pause`` apart, varied), each child running ``child``; the failures.

    Stops at the first child that hangs: each costs CHILD_TIMEOUT."""
    failures: list[str] = []
    for i in range(forks):
        time.sleep(pause * (i % 5))
        code, message = _fork_once(child)
        if code != OK:
            failures.append(f"fork {i}: exit {code}: {message}")
            if code is None:
                break
    return failures


@pytest.mark.parametrize("path", ["views", "no_views"])
def test_forked_children_keep_recording_while_parent_threads_call_a_breaker(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=use_histogram_path(path, monkeypatch))
    # A failure every other call keeps the breaker's own lock busy (every failure, and every success
    # after one, takes it), yet the breaker never opens: the threshold is out of reach.
    breaker = CircuitBreaker("forked", failure_threshold=10**9, meter_provider=provider)
    stop = threading.Event()
    calls = [0] * CALLING_THREADS

    def hammer(slot: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            with contextlib.suppress(Boom):
                breaker.call(fail if n % 2 else ok)
            calls[slot] = n

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(CALLING_THREADS)]
    for thread in threads:
        thread.start()

    def child() -> str | None:
        before = _totals(reader, "forked")
        for _ in range(CHILD_CALLS):
            breaker.call(ok)
        after = _totals(reader, "forked")
        again = _totals(reader, "forked")
        successes, failures, latency = after
        if successes < CHILD_CALLS:
            return f"successes {successes} < the child's own {CHILD_CALLS} calls"
        if (after[0] - before[0], after[2] - before[2]) != (CHILD_CALLS, CHILD_CALLS):
            return f"the child's {CHILD_CALLS} calls counted as {after[0] - before[0]} / timed {after[2] - before[2]}"
        # A thread stopped by fork() mid-call may have counted its outcome without its duration: at
        # most one such call per calling thread. Anything else is a miscount.
        gap = successes + failures - latency
        if not 0 <= gap <= CALLING_THREADS:
            return f"successes {successes} + failures {failures} vs latency count {latency}"
        if again != after:
            return f"a second collection changed the totals: {after} -> {again}"
        if breaker.state.name != "CLOSED":
            return f"breaker state {breaker.state.name}"
        return None

    failures: list[str] = []
    try:
        # Let both threads get going (and own their rows) before the first fork.
        deadline = time.monotonic() + 5
        while min(calls) < 100 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert min(calls) >= 100, "calling threads did not start"
        failures = _fork_each(FORKS, child, pause=0.002)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    # The parent is unaffected by its children.
    successes, failed, latency = _totals(reader, "forked")
    provider.shutdown()
    assert not failures, "\n".join(failures)
    assert successes + failed == latency == sum(calls)


def test_a_forked_child_can_use_a_breaker_whose_lock_was_held_at_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: fork while another thread is inside the breaker's lock (a state listener)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    breaker = CircuitBreaker("held", failure_threshold=1, recovery_timeout=0.0, meter_provider=provider)
    inside, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with breaker._lock:
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert inside.wait(5)

    def child() -> str | None:
        # Each of these takes the breaker's lock: open, half-open trial, close.
        with contextlib.suppress(Boom):
            breaker.call(fail)
        breaker.call(ok)
        try:
            breaker.open()
            breaker.close()
        except CircuitOpenError as exc:  # pragma: no cover - would be a state bug
            return repr(exc)
        successes, failures, latency = _totals(reader, "held")
        if (successes, failures, latency) != (1, 1, 2):
            return f"totals {(successes, failures, latency)}"
        return None

    try:
        code, message = _fork_once(child)
    finally:
        release.set()
        holder.join(timeout=10)
        provider.shutdown()
    assert code == OK, message


def test_a_forked_child_can_collect_while_a_recording_lock_was_held_at_fork() -> None:
    """The recording layer's own locks (registry, series, rows) held by another thread at fork."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    breaker = CircuitBreaker("rows", meter_provider=provider)
    breaker.call(lambda: None)
    series: Any = breaker._series
    registry = registry_for(provider)
    inside, release = threading.Event(), threading.Event()

    def hold_the_locks() -> None:
        with registry._lock, series._lock, breaker._rows._lock:  # type: ignore[union-attr]
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_locks, daemon=True)
    holder.start()
    assert inside.wait(5)

    def child() -> str | None:
        CircuitBreaker("new-name", meter_provider=provider).call(lambda: None)  # registry lock
        threading.Thread(target=breaker.call, args=(lambda: None,)).start()  # a new row: rows lock
        breaker.call(lambda: None)
        totals = _totals(reader, "rows")  # collection: series and rows locks
        deadline = time.monotonic() + 5
        while totals != (3, 0, 3) and time.monotonic() < deadline:
            time.sleep(0.01)
            totals = _totals(reader, "rows")
        return None if totals == (3, 0, 3) else f"totals {totals}"

    try:
        code, message = _fork_once(child)
    finally:
        release.set()
        holder.join(timeout=10)
        provider.shutdown()
    assert code == OK, message


@pytest.mark.parametrize("hot_path", HOT_PATHS)
def test_forked_children_count_library_calls_while_parent_threads_are_inside_them(
    hot_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pybreaker, circuitbreaker and purgatory instrumented: parent threads are inside guarded calls
    (purgatory's wrapper between ``__enter__`` and ``__exit__``) when the process forks; each child
    counts its own calls exactly, on the compiled hot paths and on the pure-Python ones."""
    import circuitbreaker
    import purgatory
    import pybreaker

    from otel_trading import views
    from otel_trading.instrumentation import TradingInstrumentor

    use_hot_path(hot_path, monkeypatch)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=list(views()))
    instrumentor = TradingInstrumentor()
    instrumentor.instrument(meter_provider=provider, config={})
    plain = pybreaker.CircuitBreaker(name="fork-pybreaker", fail_max=10**9)
    decorated = circuitbreaker.circuit(name="fork-circuitbreaker", failure_threshold=10**9)(ok)
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=10**9)
    guarded = factory("fork-purgatory")(lambda: time.sleep(0.0001))
    calls = {name: [0] * CALLING_THREADS for name in ("fork-pybreaker", "fork-circuitbreaker", "fork-purgatory")}
    runs: dict[str, Callable[[], object]] = {
        "fork-pybreaker": lambda: plain.call(ok),
        "fork-circuitbreaker": decorated,
        "fork-purgatory": guarded,
    }
    stop = threading.Event()

    def hammer(slot: int) -> None:
        while not stop.is_set():
            for name, run in runs.items():
                run()
                calls[name][slot] += 1

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(CALLING_THREADS)]
    for thread in threads:
        thread.start()

    def child() -> str | None:
        for name, run in runs.items():
            before = _totals(reader, name)
            for _ in range(CHILD_CALLS):
                run()
            after = _totals(reader, name)
            if (after[0] - before[0], after[2] - before[2], after[1]) != (CHILD_CALLS, CHILD_CALLS, 0):
                return f"{name}: {CHILD_CALLS} calls in the child counted as {before} -> {after}"
        return None

    failures: list[str] = []
    try:
        deadline = time.monotonic() + 5
        while min(min(c) for c in calls.values()) < 50 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert min(min(c) for c in calls.values()) >= 50, "calling threads did not start"
        failures = _fork_each(FORKS // 2, child, pause=0.001)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    try:
        assert not failures, "\n".join(failures)
        for name, per_thread in calls.items():
            successes, failed, latency = _totals(reader, name)
            assert (successes, failed, latency) == (sum(per_thread), 0, sum(per_thread)), name
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
