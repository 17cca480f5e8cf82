"""The own components' compiled histogram update (``recording._fast_rows``): built, chosen, the inline Python's twin."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import NonRecordingSpan

from otel_trading import CircuitBreaker, EventBus
from otel_trading import circuit_breaker as circuit_breaker_module
from otel_trading import event_bus as event_bus_module
from otel_trading.recording import BOUNDS, exemplars, fast_rows, new_row, observe
from otel_trading.recording import series as series_module
from otel_trading.recording.exponential import (
    E_COUNTS,
    E_FACTOR,
    E_HI,
    E_LO,
    E_SUM,
    E_WIDTH,
    E_ZERO,
    epoch_add,
    epoch_taken,
    new_epoch,
)
from otel_trading.recording.rows import B0, EPOCH, MAX, MIN, SUM
from otel_trading.recording.series import Binding, Series
from otel_trading.settings import OTEL_TRADING_PURE_PYTHON

from ..conftest import use_hot_path
from .hot_paths import compiled_record, compiled_record_exponential
from .sdk_reference import span_context
from .timed_breaker import DurationClock

MODULE = "otel_trading.recording._fast_rows"


def _around(bound: float) -> list[float]:
    return [math.nextafter(bound, -math.inf), float(bound), math.nextafter(bound, math.inf)]


#: Durations as the components see them: anywhere, within the first bucket, on and beside every bound.
DURATIONS = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=20.0),
        st.floats(min_value=0.0, max_value=BOUNDS[0]),
        st.sampled_from([v for bound in BOUNDS for v in _around(bound)]),
    ),
    max_size=60,
)


@contextlib.contextmanager
def _current(ctx: Any) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


#: OpenTelemetry contexts a duration may be recorded in: empty, a sampled span, an unsampled one, another value.
CONTEXTS = {
    "no span": lambda: otel_context.Context(),
    "sampled span": lambda: trace.set_span_in_context(NonRecordingSpan(span_context(7, 9))),
    "unsampled span": lambda: trace.set_span_in_context(NonRecordingSpan(span_context(7, 9, sampled=False))),
    "another value": lambda: otel_context.set_value("key", "value", otel_context.Context()),
}


# -- built and chosen ------------------------------------------------------------------------------------


def test_the_components_update_is_built_where_ci_runs() -> None:
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("checked where CI=true: the test command builds it")
    assert fast_rows.record is not None, fast_rows.why_not


def test_the_components_use_the_compiled_update_when_it_is_built() -> None:
    record = compiled_record()
    assert circuit_breaker_module._fast_record is record
    assert event_bus_module._fast_record is record
    assert series_module._record_exponential is compiled_record_exponential()


def test_the_pure_python_variable_leaves_the_components_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTEL_TRADING_PURE_PYTHON, "true")
    assert fast_rows._load(fast_rows.refused()) == (None, None, fast_rows.TURNED_OFF)


def test_a_module_that_is_not_built_leaves_the_components_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, MODULE, None)  # import fails
    monkeypatch.delattr(sys.modules["otel_trading.recording"], "_fast_rows", raising=False)
    record, record_exponential, why = fast_rows._load(None)
    assert record is None and record_exponential is None and why is not None and MODULE in why


def test_a_module_built_from_older_sources_leaves_the_components_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    older = types.ModuleType(MODULE)
    older.configure = lambda *args: None  # type: ignore[attr-defined]  # no configure_epochs
    monkeypatch.setitem(sys.modules, MODULE, older)
    monkeypatch.setattr(sys.modules["otel_trading.recording"], "_fast_rows", older, raising=False)
    record, record_exponential, why = fast_rows._load(None)
    assert record is None and record_exponential is None and why is not None and "configure_epochs" in why


def test_another_runtime_context_leaves_the_components_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # record() could not see its spans: the inline Python's current_context() asks that runtime.
    monkeypatch.setattr(fast_rows, "otel_context_var", lambda: None)
    assert fast_rows._load(None) == (None, None, fast_rows.NO_CONTEXT_VARIABLE)


def test_the_loader_is_configured_with_opentelemetrys_context_variable() -> None:
    compiled_record()
    runtime: Any = otel_context._RUNTIME_CONTEXT
    assert exemplars.otel_context_var() is runtime._current_context


# -- the update: the inline Python's, value for value ------------------------------------------------------


@given(DURATIONS)
def test_record_leaves_the_row_observe_leaves(values: list[float]) -> None:
    record = compiled_record()
    by_python, by_c = new_row(), new_row()
    for value in values:
        observe(by_python, value)
        assert record(by_c, value) is False  # outside any span
    assert by_c == by_python
    assert [type(v) for v in by_c] == [type(v) for v in by_python]


@pytest.mark.parametrize(
    "row",
    [
        [0, 0],  # too short
        (0,) * 30,  # not a list
        [0, 0, 0, "sum", 0.0, 0.0, None, *([0] * len(BOUNDS) + [0])],  # not a row's columns
        new_row((0.1, 1.0)),  # a row of other bounds (the event-loop monitor's)
    ],
    ids=["short", "tuple", "columns", "other-bounds"],
)
@pytest.mark.parametrize("function", ["record", "record_exponential"])
def test_record_refuses_what_is_not_a_row_of_the_layout_and_leaves_it(function: str, row: Any) -> None:
    record = compiled_record() if function == "record" else compiled_record_exponential()
    snapshot = list(row) if isinstance(row, list) else row
    assert record(row, 0.001) is None
    assert (list(row) if isinstance(row, list) else row) == snapshot


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_record_says_what_the_inline_context_check_says(context: str) -> None:
    record = compiled_record()
    with _current(CONTEXTS[context]()):
        expected = bool(exemplars.current_context())
        assert record(new_row(), 0.001) is expected
    assert expected is (context != "no span")


# -- the components on both paths ---------------------------------------------------------------------------


def _timed_breaker(provider: MeterProvider, clock: DurationClock, monkeypatch: pytest.MonkeyPatch) -> CircuitBreaker:
    monkeypatch.setattr(circuit_breaker_module, "perf_counter", clock)
    return CircuitBreaker("fast-rows", failure_threshold=10**9, meter_provider=provider, sample_rate=1.0)


def _fail() -> None:
    raise ValueError("down")


def _breaker_row(path: str, values: list[float], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The row a breaker on ``path`` leaves: ``call`` successes, failures (``_record``) and ``call_async``
    successes (``_record``) in turn, each lasting the next of ``values``."""
    with monkeypatch.context() as patch:
        use_hot_path(path, patch)
        provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
        clock = DurationClock()
        clock.values = list(values)
        breaker = _timed_breaker(provider, clock, patch)
        try:
            for i in range(len(values)):
                if i % 3 == 0:
                    breaker.call(lambda: None)
                elif i % 3 == 1:
                    with pytest.raises(ValueError):
                        breaker.call(_fail)
                else:

                    async def ok() -> None:
                        pass

                    asyncio.run(breaker.call_async(ok))
            assert breaker._rows is not None
            return breaker._rows.row()
        finally:
            provider.shutdown()


@given(DURATIONS)
def test_a_breaker_leaves_the_same_row_on_both_paths(values: list[float]) -> None:
    compiled_record()
    with pytest.MonkeyPatch.context() as monkeypatch:
        by_c = _breaker_row("compiled", values, monkeypatch)
        by_python = _breaker_row("python", values, monkeypatch)
    assert by_c == by_python
    assert [type(v) for v in by_c] == [type(v) for v in by_python]


@dataclass
class Tick:
    n: int = 0


async def _bus_row(path: str, values: list[float], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The Tick row a bus on ``path`` leaves, each event's handling lasting the next of ``values``."""
    with monkeypatch.context() as patch:
        use_hot_path(path, patch)
        clock = DurationClock()
        clock.values = list(values)
        patch.setattr(event_bus_module, "perf_counter", clock)
        provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
        try:
            async with EventBus(meter_provider=provider, sample_rate=1.0) as bus:
                bus.subscribe(Tick, lambda event: None)
                for n in range(len(values)):
                    await bus.publish(Tick(n))
            row, _ = bus._stats[Tick]
            return list(row)
        finally:
            provider.shutdown()


@pytest.mark.parametrize("values", [[], [0.0], [BOUNDS[0]], _around(BOUNDS[0]) + _around(BOUNDS[-1]) + [30.0, 1e-7]])
async def test_a_bus_leaves_the_same_row_on_both_paths(values: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    compiled_record()
    by_c = await _bus_row("compiled", values, monkeypatch)
    by_python = await _bus_row("python", values, monkeypatch)
    expected = new_row()
    for value in values:
        observe(expected, value)
    assert by_c == by_python and by_c[SUM:] == expected[SUM:]


@pytest.mark.parametrize("path", ["compiled", "python"])
@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_a_breaker_offers_an_exemplar_only_in_a_non_empty_context(
    path: str, context: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hot_path(path, monkeypatch)
    provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
    clock = DurationClock()
    clock.values = [0.001, 0.002]
    breaker = _timed_breaker(provider, clock, monkeypatch)
    offered: list[float] = []
    assert breaker._series is not None and breaker._series.fast
    monkeypatch.setattr(breaker._series, "offer_exemplar", offered.append)
    try:
        with _current(CONTEXTS[context]()):
            breaker.call(lambda: None)  # call()
            with pytest.raises(ValueError):
                breaker.call(_fail)  # _record()
    finally:
        provider.shutdown()
    assert offered == ([] if context == "no span" else [0.001, 0.002])


@pytest.mark.parametrize("path", ["compiled", "python"])
def test_a_bus_offers_an_exemplar_only_in_a_span(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_hot_path(path, monkeypatch)
    provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
    offered: list[float] = []

    async def run() -> None:
        async with EventBus(meter_provider=provider, sample_rate=1.0) as bus:
            bus.subscribe(Tick, lambda event: None)
            series = bus._stats_for(Tick)[1]
            monkeypatch.setattr(series, "offer_exemplar", offered.append)
            await bus.publish(Tick(0))  # the worker runs in the context the bus started in: no span

    try:
        asyncio.run(run())
        with _current(CONTEXTS["sampled span"]()):
            asyncio.run(run())  # asyncio.run copies the current context: the worker's holds the span
    finally:
        provider.shutdown()
    assert len(offered) == 1


def test_a_row_the_compiled_update_refuses_is_recorded_by_the_inline_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_breaker_module, "_fast_record", lambda row, value: None)
    provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
    clock = DurationClock()
    clock.values = [0.25]
    breaker = _timed_breaker(provider, clock, monkeypatch)
    try:
        breaker.call(lambda: None)
        assert breaker._rows is not None
        expected = new_row()
        observe(expected, 0.25)
        expected[0] = 1  # SUCCESSES
        assert breaker._rows.row() == expected
    finally:
        provider.shutdown()


# -- rows that keep exponential buckets too: record_exponential ---------------------------------------------

#: Durations for epochs: the components' ones, powers of two (the exact rule's) and a wide range (rescales).
EPOCH_DURATIONS = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=20.0),
        st.sampled_from([2.0**k for k in range(-20, 4)]),
        st.floats(min_value=1e-9, max_value=1e4),
    ),
    max_size=60,
)


def _epoch_row() -> list[Any]:
    row = new_row()
    row[EPOCH] = new_epoch()
    return row


@given(EPOCH_DURATIONS)
def test_record_exponential_leaves_the_row_and_epoch_the_inline_python_leaves(values: list[float]) -> None:
    record_exponential = compiled_record_exponential()
    by_python, by_c = _epoch_row(), _epoch_row()
    for value in values:
        observe(by_python, value)
        epoch_add(by_python[EPOCH], value)
        flags = record_exponential(by_c, value)
        assert flags in (0, 2)  # outside any span
        if flags & 2:
            epoch_add(by_c[EPOCH], value)  # what Series.observe_slow does under its lock
    assert by_c == by_python
    assert [type(v) for v in by_c[EPOCH]] == [type(v) for v in by_python[EPOCH]]


def test_record_exponential_adds_a_duration_inside_the_epochs_range_itself() -> None:
    record_exponential = compiled_record_exponential()
    row = _epoch_row()
    for value in (0.001, 0.01):
        epoch_add(row[EPOCH], value)
    zero, total, counts = epoch_taken(row[EPOCH])
    assert record_exponential(row, 0.003) == 0
    assert record_exponential(row, 0.0) == 0
    assert row[EPOCH][E_ZERO] == zero + 1 and row[EPOCH][E_SUM] == total + 0.003
    assert sum(row[EPOCH][E_COUNTS].values()) == sum(counts.values()) + 1


@pytest.mark.parametrize(
    "value",
    [0.5, 1e-6, 2.0**-8, -0.001, 5e-324],
    ids=["above-the-range", "below-the-range", "power-of-two", "negative", "subnormal"],
)
def test_record_exponential_leaves_what_needs_the_full_rule_to_python_and_the_epoch_untouched(value: float) -> None:
    record_exponential = compiled_record_exponential()
    row = _epoch_row()
    for v in (0.001, 0.01):
        epoch_add(row[EPOCH], v)
    epoch = list(row[EPOCH])
    counts = dict(epoch[E_COUNTS])
    expected = new_row()
    observe(expected, value)
    assert record_exponential(row, value) == 2
    assert row[EPOCH] == epoch and row[EPOCH][E_COUNTS] == counts
    assert row[SUM:EPOCH] == expected[SUM:EPOCH] and row[EPOCH + 1 :] == expected[EPOCH + 1 :]


def test_record_exponential_leaves_a_row_without_an_epoch_yet_to_python() -> None:
    row = new_row()
    assert compiled_record_exponential()(row, 0.001) == 2
    assert row[EPOCH] is None and row[SUM] == 0.001


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_record_exponential_says_what_the_inline_context_check_says(context: str) -> None:
    record_exponential = compiled_record_exponential()
    with _current(CONTEXTS[context]()):
        expected = bool(exemplars.current_context())
        assert record_exponential(_epoch_row(), 0.001) == 2 | int(expected)  # a fresh epoch: Python adds
    assert expected is (context != "no span")


@pytest.mark.parametrize(
    "layout",
    [(SUM, 8, 0, 1, 2, 3, 4, 5), (EPOCH, 8, 0, 1, 2, 3, 4, 4), (EPOCH, 8, 0, 1, 2, 3, 4, 8)],
    ids=["a-taken-column", "fields-not-distinct", "a-field-outside-the-width"],
)
def test_configure_epochs_refuses_a_layout_that_does_not_fit_and_keeps_the_one_it_had(
    layout: tuple[int, ...],
) -> None:
    record_exponential = compiled_record_exponential()
    from otel_trading.recording import _fast_rows  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="configure_epochs"):
        _fast_rows.configure_epochs(*layout)
    row = _epoch_row()
    epoch_add(row[EPOCH], 0.001)
    epoch_add(row[EPOCH], 0.01)
    assert record_exponential(row, 0.003) == 0


def test_a_new_row_layout_forgets_the_epoch_layout_until_it_is_configured_again() -> None:
    record_exponential = compiled_record_exponential()
    from otel_trading.recording import _fast_rows  # type: ignore[attr-defined]

    context = exemplars.otel_context_var()
    try:
        _fast_rows.configure(BOUNDS, SUM, MIN, MAX, B0, context)
        assert record_exponential(_epoch_row(), 0.001) is None  # the epoch column may have moved
    finally:
        _fast_rows.configure_epochs(EPOCH, E_WIDTH, E_FACTOR, E_LO, E_HI, E_ZERO, E_SUM, E_COUNTS)
    assert record_exponential(_epoch_row(), 0.001) == 2


def test_a_series_with_other_bounds_of_the_same_count_keeps_its_own_buckets() -> None:
    compiled_record_exponential()
    other = tuple(float(n) for n in range(1, len(BOUNDS) + 1))
    series = Series({"name": "b"}, None, Binding.ROWS, bounds=other, exponential=(20, 160))
    row, expected = new_row(other), new_row(other)
    row[EPOCH] = new_epoch()
    assert series.observe_slow(row, 3.5)
    observe(expected, 3.5, other)
    assert row[:EPOCH] == expected[:EPOCH] and row[EPOCH + 1 :] == expected[EPOCH + 1 :]
