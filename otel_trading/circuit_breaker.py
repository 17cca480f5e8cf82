"""An asyncio-native, thread-safe circuit breaker that records the guide's circuit_breaker_* metrics.

State machine: CLOSED -> OPEN after ``failure_threshold`` consecutive failures; OPEN rejects with
``CircuitOpenError``; after ``recovery_timeout`` seconds the next call is a HALF_OPEN trial (at most
``half_open_max_calls`` at once); a trial success closes, a trial failure re-opens. The lock is held
only around transitions, never across the guarded call.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from enum import IntEnum
from random import random
from time import perf_counter
from types import CoroutineType
from typing import Any, NoReturn, ParamSpec, TypeVar

from opentelemetry.metrics import MeterProvider

from otel_trading import metric_contract as mc
from otel_trading.errors import CircuitOpenError
from otel_trading.recording import (
    B0,
    BOUNDS,
    FAILURES,
    MAX,
    MIN,
    REJECTED,
    SUCCESSES,
    SUM,
    Series,
    ThreadRows,
    registry_for,
)
from otel_trading.recording.exemplars import current_context
from otel_trading.recording.fast_rows import record as _fast_record
from otel_trading.recording.rows import fork_safe
from otel_trading.settings import check_bool, check_int, check_name, check_number, resolve_sample_rate

__all__ = ["CircuitBreaker", "CircuitOpenError", "CircuitState", "StateListener"]

_logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class CircuitState(IntEnum):
    """Breaker states; the values are what ``circuit_breaker_state`` reports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        """The ``from_state``/``to_state`` label value: ``closed``, ``open`` or ``half_open``."""
        return self.name.lower()


#: ``listener(breaker, old_state, new_state)``, called after each transition, outside the lock.
StateListener = Callable[["CircuitBreaker", CircuitState, CircuitState], None]
ExclusionRule = type[BaseException] | Callable[[BaseException], bool]

_CLOSED = CircuitState.CLOSED
_FIRST_BOUND = BOUNDS[0]


class CircuitBreaker:
    """Guards calls to an unreliable dependency (an exchange, a venue API).

    ``call(fn, ...)`` for sync code, ``await call_async(coro_fn, ...)`` for asyncio, or use the
    instance as a decorator on ``def`` and ``async def`` functions alike.

    ``excluded_exceptions`` holds exception types, or predicates taking the exception, for errors
    that are the caller's business (e.g. an order rejected for insufficient funds): they propagate
    without counting as failures and count as successes of the dependency.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        *,
        half_open_max_calls: int = 1,
        excluded_exceptions: Iterable[ExclusionRule] = (),
        listeners: Iterable[StateListener] = (),
        metrics_enabled: bool = True,
        meter_provider: MeterProvider | None = None,
        sample_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = check_name("name", name)
        self.failure_threshold = check_int("failure_threshold", failure_threshold, 1)
        self.recovery_timeout = check_number("recovery_timeout", recovery_timeout)
        self.half_open_max_calls = check_int("half_open_max_calls", half_open_max_calls, 1)
        self.sample_rate = resolve_sample_rate(sample_rate)
        check_bool("metrics_enabled", metrics_enabled)
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        self._excluded_types, self._excluded_predicates = _split_exclusions(excluded_exceptions)
        self._listeners: list[StateListener] = []
        for listener in listeners:
            self.add_listener(listener)
        self._clock = clock
        self._lock = threading.Lock()
        # Calling threads take this lock on transitions and after failures: a fork() while one of
        # them holds it must not leave the child's breaker locked forever.
        fork_safe(self)
        self._state = _CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        # Numbers HALF_OPEN episodes: only trials admitted in the current one hold a slot or decide.
        self._episode = 0

        self._rows: ThreadRows | None = None
        self._series: Series | None = None
        # Which calls read the clock: all (_time_all), a sampled share (_time_rate), or none.
        self._time_all = False
        self._time_rate = 0.0
        registry = registry_for(meter_provider) if metrics_enabled else None
        if registry is not None and registry.group_enabled(mc.MetricGroup.BREAKER):
            series = registry.breaker(self.name)
            self._rows = ThreadRows()
            self._series = series
            if registry.enabled(mc.BREAKER_LATENCY.key) and self.sample_rate > 0.0:
                self._time_all = self.sample_rate >= 1.0
                self._time_rate = self.sample_rate
            series.attach(self, self._rows)

    # -- public state -------------------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        """The current state. OPEN stays OPEN after ``recovery_timeout`` until a call tries the
        dependency: an idle breaker has not seen the venue recover, and alerts should say so."""
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted towards ``failure_threshold``."""
        return self._failures

    def add_listener(self, listener: StateListener) -> None:
        if not callable(listener):
            raise TypeError("listener must be callable(breaker, old_state, new_state)")
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        self._listeners.remove(listener)

    def open(self) -> None:
        """Force the breaker OPEN (e.g. a venue announced maintenance)."""
        with self._lock:
            old = self._move(CircuitState.OPEN)
        self._notify(old, CircuitState.OPEN)

    def close(self) -> None:
        """Force the breaker CLOSED and forget counted failures."""
        with self._lock:
            self._failures = 0
            old = self._move(_CLOSED)
        self._notify(old, _CLOSED)

    # -- calling --------------------------------------------------------------------------------------
    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        ``fn`` returning a coroutine (an ``async def``) is a ``TypeError``: nothing would run it
        and the breaker would count a success. Use ``await call_async(fn, ...)`` or the decorator.
        """
        trial = self._admit() if self._state is not _CLOSED else False
        # Read the clock only for calls the latency histogram will see (metrics on, sampled in).
        start = perf_counter() if self._time_all or (self._time_rate and random() < self._time_rate) else None
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, trial, None if start is None else perf_counter() - start)
            raise
        if type(result) is CoroutineType:
            self._misused("call", fn, result, trial)
        rows = self._rows
        if rows is None:
            if trial or self._failures:
                self._settle_success(trial)
            return result
        # _on_success() and _record() inlined for the common success: on Python 3.10 and 3.13 their
        # two frames cost as much as the recording itself (bench/run.py, own breaker vs pybreaker).
        try:
            row = rows.local.row
        except AttributeError:
            row = rows.row()
        row[SUCCESSES] += 1
        if start is not None:
            elapsed = perf_counter() - start
            if self._series.fast:  # type: ignore[union-attr]
                # Compiled: the update and "is a span current?" in one C call, cheaper than the Python.
                held = _fast_record(row, elapsed) if _fast_record is not None else None
                if held is None:
                    # recording.observe() inlined: the breaker row of bench/run.py pays for the call.
                    row[SUM] += elapsed
                    if elapsed < row[MIN]:
                        row[MIN] = elapsed
                    if elapsed > row[MAX]:
                        row[MAX] = elapsed
                    row[B0 if elapsed <= _FIRST_BOUND else B0 + bisect_left(BOUNDS, elapsed)] += 1
                    held = current_context()  # a span (or another value) is current: an exemplar candidate
                if held:
                    self._series.offer_exemplar(elapsed)  # type: ignore[union-attr]
            else:
                self._series.observe_slow(row, elapsed)  # type: ignore[union-attr]
        if trial or self._failures:
            self._settle_success(trial)
        return result

    async def call_async(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        ``fn`` returning something that cannot be awaited (a plain ``def``) is a ``TypeError``,
        counted neither as a success nor as a failure. Use ``call(fn, ...)`` for plain functions.
        """
        trial = self._admit() if self._state is not _CLOSED else False
        start = perf_counter() if self._time_all or (self._time_rate and random() < self._time_rate) else None
        try:
            awaitable = fn(*args, **kwargs)
        except BaseException as exc:
            self._on_error(exc, trial, None if start is None else perf_counter() - start)
            raise
        if type(awaitable) is not CoroutineType and not inspect.isawaitable(awaitable):
            self._misused("call_async", fn, awaitable, trial)
        try:
            result = await awaitable
        except BaseException as exc:
            self._on_error(exc, trial, None if start is None else perf_counter() - start)
            raise
        self._on_success(trial, None if start is None else perf_counter() - start)
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function or coroutine function so every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call_async(fn, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state.name}, failures={self._failures})"

    # -- internals ------------------------------------------------------------------------------------
    def _misused(self, method: str, fn: Callable[..., Any], result: object, trial: int) -> NoReturn:
        """``call`` given an async function, or ``call_async`` a plain one: counted as nothing, the
        trial slot freed, and a TypeError naming the right method."""
        if trial:
            with self._lock:
                self._end_trial(trial)
        name = getattr(fn, "__qualname__", None) or repr(fn)
        if method == "call":
            result.close()  # type: ignore[attr-defined]  # never awaited: no "never awaited" warning
            raise TypeError(
                f"circuit breaker {self.name!r}: call() got {name}, which returned a coroutine (an async "
                "function): use `await breaker.call_async(fn, ...)` or decorate it with @breaker"
            )
        raise TypeError(
            f"circuit breaker {self.name!r}: call_async() got {name}, which returned "
            f"{type(result).__name__} (not awaitable; a plain function ran): use `breaker.call(fn, ...)` "
            "or decorate it with @breaker"
        )

    def _on_success(self, trial: int, elapsed: float | None) -> None:
        if self._rows is not None:
            self._record(SUCCESSES, elapsed)
        if trial or self._failures:
            self._settle_success(trial)

    def _on_error(self, exc: BaseException, trial: int, elapsed: float | None) -> None:
        if not isinstance(exc, Exception):
            # Cancellation or interpreter exit says nothing about the dependency's health.
            if trial:
                with self._lock:
                    self._end_trial(trial)
            return
        if self._is_excluded(exc):
            self._on_success(trial, elapsed)
            return
        if self._rows is not None:
            self._record(FAILURES, elapsed)
        with self._lock:
            current_trial = self._end_trial(trial)
            self._failures += 1
            old = None
            if current_trial or (self._state is _CLOSED and self._failures >= self.failure_threshold):
                old = self._move(CircuitState.OPEN)
        if old is not None:
            self._notify(old, CircuitState.OPEN)

    def _record(self, column: int, elapsed: float | None) -> None:
        """Count an outcome in this thread's row, and its duration if it was timed (metrics on only)."""
        rows = self._rows
        try:
            row = rows.local.row  # type: ignore[union-attr]
        except AttributeError:
            row = rows.row()  # type: ignore[union-attr]
        row[column] += 1
        if elapsed is not None:
            series = self._series
            if series.fast:  # type: ignore[union-attr]
                # Compiled update and context check in one call (see call()); None: record in Python.
                held = _fast_record(row, elapsed) if _fast_record is not None else None
                if held is None:
                    # recording.observe() inlined: a call costs as much as the work on this path.
                    row[SUM] += elapsed
                    if elapsed < row[MIN]:
                        row[MIN] = elapsed
                    if elapsed > row[MAX]:
                        row[MAX] = elapsed
                    # Calls within the first bucket (10 us, e.g. a cached quote) skip the bisect.
                    row[B0 if elapsed <= _FIRST_BOUND else B0 + bisect_left(BOUNDS, elapsed)] += 1
                    held = current_context()
                if held:
                    series.offer_exemplar(elapsed)  # type: ignore[union-attr]
            else:
                series.observe_slow(row, elapsed)  # type: ignore[union-attr]

    def _end_trial(self, trial: int) -> bool:
        """Free the slot of a trial of the current HALF_OPEN episode (lock held); True if it was one.

        A call admitted in an earlier episode (before a re-open or a forced open()/close()) must
        neither free a slot of this one (more than half_open_max_calls would run) nor decide it.
        """
        if trial and trial == self._episode and self._state is CircuitState.HALF_OPEN:
            self._trials -= 1
            return True
        return False

    def _settle_success(self, trial: int) -> None:
        with self._lock:
            current_trial = self._end_trial(trial)
            self._failures = 0
            old = self._move(_CLOSED) if current_trial else None
        if old is not None:
            self._notify(old, _CLOSED)

    def _admit(self) -> int:
        """Admit a call while not CLOSED: a trial's HALF_OPEN episode number (> 0), else 0; raises
        CircuitOpenError if rejected."""
        old = None
        with self._lock:
            state = self._state
            if state is CircuitState.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.recovery_timeout:
                    self._reject(state, self.recovery_timeout - waited)
                old = self._move(CircuitState.HALF_OPEN)
                state = CircuitState.HALF_OPEN
            if state is CircuitState.HALF_OPEN:
                if self._trials >= self.half_open_max_calls:
                    self._reject(state, 0.0)
                self._trials += 1
                trial = self._episode
            else:
                trial = 0
        if old is not None:
            self._notify(old, CircuitState.HALF_OPEN)
        return trial

    def _reject(self, state: CircuitState, retry_after: float) -> None:
        rows = self._rows
        if rows is not None:
            rows.row()[REJECTED] += 1
        raise CircuitOpenError(self.name, state, retry_after)

    def _move(self, new: CircuitState) -> CircuitState | None:
        """Change state (lock held); returns the old state, or None if nothing changed."""
        old = self._state
        if old is new:
            return None
        self._state = new
        if new is CircuitState.OPEN:
            self._opened_at = self._clock()
        if new is CircuitState.HALF_OPEN:
            self._episode += 1
        else:
            self._trials = 0
        if self._series is not None:
            self._series.count_transition(old.label, new.label)
        return old

    def _notify(self, old: CircuitState | None, new: CircuitState) -> None:
        if old is None:
            return
        for listener in list(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                _logger.exception("circuit breaker %r: state listener %r failed", self.name, listener)

    def _is_excluded(self, exc: BaseException) -> bool:
        if self._excluded_types and isinstance(exc, self._excluded_types):
            return True
        for predicate in self._excluded_predicates:
            try:
                if predicate(exc):
                    return True
            except Exception:
                _logger.exception("circuit breaker %r: excluded_exceptions predicate failed", self.name)
        return False


def _split_exclusions(
    rules: Iterable[ExclusionRule],
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[BaseException], bool], ...]]:
    if isinstance(rules, type) or (callable(rules) and not isinstance(rules, Iterable)):
        rules = (rules,)
    types: list[type[BaseException]] = []
    predicates: list[Callable[[BaseException], bool]] = []
    for rule in rules:
        if isinstance(rule, type) and issubclass(rule, BaseException):
            types.append(rule)
        elif callable(rule) and not isinstance(rule, type):
            predicates.append(rule)
        else:
            raise TypeError(f"excluded_exceptions entries must be exception types or predicates, got {rule!r}")
    return tuple(types), tuple(predicates)
