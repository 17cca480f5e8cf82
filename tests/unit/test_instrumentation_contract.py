"""The contract every library instrumentation keeps, stated once and run on each library and hot path.

Each library is driven through its adapter (``instrumentation_adapters``): the class-level contract
runs on one adapter per library (``LIBRARIES``), the behaviour contract on every adapter
(``SUBJECTS``: also purgatory's async breaker and pyee's asyncio emitter). Every test runs on the
compiled hot paths and on their pure-Python twins. What each library alone does is tested in its
own module (``test_instrumentation_<library>.py``).
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_trading.instrumentation import LIBRARY_INSTRUMENTORS, LibraryInstrumentor, TradingInstrumentor

from ..conftest import HISTOGRAM_PATHS, Metrics, make_metrics, run_in_threads
from .instrumentation_adapters import ADAPTERS, LIBRARIES, SUBJECTS, Adapter, Subject

pytestmark = pytest.mark.usefixtures("hot_path")

library = pytest.mark.parametrize("adapter", LIBRARIES, indirect=True)
subject = pytest.mark.parametrize("adapter", SUBJECTS, indirect=True)


@pytest.fixture
def adapter(request: pytest.FixtureRequest) -> Iterator[Adapter]:
    made = ADAPTERS[request.param]()
    yield made
    made.close()


def patched_names(patched: list[tuple[type, str]]) -> list[str]:
    return sorted(f"{owner.__module__}.{owner.__qualname__}.{name}" for owner, name in patched)


def attributes(classes: list[type]) -> dict[type, dict[str, Any]]:
    return {cls: dict(vars(cls)) for cls in classes}


def replaced(before: dict[type, dict[str, Any]], after: dict[type, dict[str, Any]]) -> list[tuple[type, str]]:
    """The class attributes added, removed or not the very same object any more."""
    return [
        (cls, name)
        for cls in before
        for name in before[cls].keys() | after[cls].keys()
        if before[cls].get(name, replaced) is not after[cls].get(name, replaced)
    ]


def run_all(adapter: Adapter, subject: Subject, ops: list[str]) -> list[Any]:
    return [adapter.run(subject, op) for op in ops]


@pytest.fixture
def provider() -> Iterator[Metrics]:
    """One provider, for what does not depend on the histogram path."""
    m = make_metrics(with_views=True)
    yield m
    m.provider.shutdown()


@pytest.fixture
def own(adapter: Adapter) -> Iterator[LibraryInstrumentor]:
    """The library's own instrumentor, not instrumented yet (and not after the test)."""
    instrumentor = adapter.instrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


@pytest.fixture
def recording(own: LibraryInstrumentor, metrics: Metrics) -> Metrics:
    """``metrics`` (on every histogram path) with the library instrumented by its own instrumentor."""
    own.instrument(meter_provider=metrics.provider)
    return metrics


@pytest.fixture(params=["own", "umbrella"])
def via(request: pytest.FixtureRequest, own: LibraryInstrumentor) -> Iterator[BaseInstrumentor]:
    """The library's own instrumentor, or the umbrella (which delegates to it); not instrumented yet."""
    chosen = own if request.param == "own" else TradingInstrumentor()
    yield chosen
    if chosen.is_instrumented_by_opentelemetry:
        chosen.uninstrument()


# -- the instrumentor -------------------------------------------------------------------------------------


@library
def test_each_library_has_its_own_instrumentor_named_after_it(adapter: Adapter) -> None:
    cls = type(adapter.instrumentor())
    assert cls in LIBRARY_INSTRUMENTORS
    assert cls.target == adapter.library
    assert cls.entry_point_name() == f"otel_trading_{adapter.library}"


@library
def test_instrumenting_patches_exactly_the_listed_methods_and_uninstrument_restores_every_attribute(
    adapter: Adapter, via: BaseInstrumentor, provider: Metrics
) -> None:
    classes = adapter.classes()
    before = attributes(classes)
    via.instrument(meter_provider=provider.provider, config={})
    alone = via is adapter.instrumentor()
    assert adapter.instrumentor().is_instrumented_by_opentelemetry
    assert TradingInstrumentor().is_instrumented_by_opentelemetry is not alone
    mine = [pair for pair in via.patched if pair[0] in before]
    assert patched_names(mine) == adapter.patched_names()
    assert sorted(replaced(before, attributes(classes)), key=str) == sorted(mine, key=str)
    assert len(mine) == len(via.patched) or not alone  # alone, it patches nothing else
    via.uninstrument()
    assert not adapter.instrumentor().is_instrumented_by_opentelemetry
    assert replaced(before, attributes(classes)) == []


def signature(obj: Any) -> str | None:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return None


def describe(obj: Any) -> Any:
    """What introspection tells of a class attribute or a function."""
    if isinstance(obj, property):
        return ("property", describe(obj.fget), describe(obj.fset), describe(obj.fdel))
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if not callable(obj) or isinstance(obj, type):
        return None
    kinds = (inspect.iscoroutinefunction(obj), inspect.isgeneratorfunction(obj), inspect.isasyncgenfunction(obj))
    names = (getattr(obj, "__name__", None), getattr(obj, "__qualname__", None), obj.__doc__)
    return (signature(obj), names, kinds)


@library
def test_signatures_names_docs_and_function_kinds_are_unchanged(
    adapter: Adapter, provider: Metrics, own: LibraryInstrumentor
) -> None:
    def everything() -> list[Any]:
        classes = [(cls, signature(cls)) for cls in adapter.classes()]
        attributes = [(cls, name, describe(attr)) for cls, _ in classes for name, attr in sorted(vars(cls).items())]
        made = [(describe(f), getattr(f, "__wrapped__", None) is source) for f, source in adapter.made_by_library()]
        return [classes, attributes, made]

    plain = everything()
    own.instrument(meter_provider=provider.provider)
    assert everything() == plain


@library
def test_the_global_meter_provider_serves_when_none_is_given(
    adapter: Adapter, own: LibraryInstrumentor, global_metrics: Metrics
) -> None:
    own.instrument()
    subject = adapter.build("global")
    steps = adapter.play(subject, ["success"])
    assert adapter.exported(global_metrics, subject) == adapter.ledger(subject, steps)


# -- outcomes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("via", "metrics"), [*(("own", path) for path in HISTOGRAM_PATHS), ("umbrella", "views")], indirect=True
)
@subject
def test_every_outcome_is_exported_exactly(adapter: Adapter, via: BaseInstrumentor, metrics: Metrics) -> None:
    via.instrument(meter_provider=metrics.provider, config={})
    subject = adapter.build("binance", fail_max=2)
    steps = adapter.play(subject, adapter.scenario())
    exported = adapter.exported(metrics, subject)
    assert exported == adapter.ledger(subject, steps)
    done = adapter.tally(adapter.scenario_tally())
    assert {k: exported[k] for k in done} == done
    if "rejection" in adapter.outcomes:
        assert exported["transitions"] == {("closed", "open"): 1}
        assert exported["gauge"] == 1


@subject
def test_the_latency_covers_the_guarded_call(adapter: Adapter, recording: Metrics) -> None:
    subject = adapter.build("binance")
    started = time.perf_counter()
    run_all(adapter, subject, ["slow", "slow"])
    took = time.perf_counter() - started
    count, total = adapter.latency(recording, subject)
    assert count == 2
    assert 0.02 <= total <= took


@subject
def test_recording_stops_after_uninstrument(adapter: Adapter, own: LibraryInstrumentor, provider: Metrics) -> None:
    own.instrument(meter_provider=provider.provider)
    subject = adapter.build("binance")
    ops: list[str] = [op for op in ("success", "failure", "excluded") if op in adapter.outcomes]
    run_all(adapter, subject, ops)
    recorded = adapter.exported(provider, subject)
    own.uninstrument()
    run_all(adapter, subject, ops)
    counted = {k for k in recorded if k != "gauge"}
    assert {k: v for k, v in adapter.exported(provider, subject).items() if k in counted} == {
        k: recorded[k] for k in counted
    }


@subject
def test_instances_created_before_instrumentation_are_found(
    adapter: Adapter, own: LibraryInstrumentor, provider: Metrics
) -> None:
    subject = adapter.build("early", fail_max=1)
    breaker = "rejection" in adapter.outcomes
    if breaker:
        adapter.run(subject, "failure")  # opens it, before instrumentation
        assert adapter.gauge(subject) == 1
    view = adapter.view(subject)
    own.instrument(meter_provider=provider.provider)
    assert adapter.view(subject) == view
    assert adapter.exported(provider, subject)["gauge"] == adapter.gauge(subject)  # open; its handlers
    adapter.run(subject, "success")
    counts = adapter.tally(Counter(rejection=1) if breaker else Counter(success=1))
    assert {k: adapter.exported(provider, subject)[k] for k in counts} == counts


@subject
def test_an_instance_created_after_instrumentation_reports_its_gauge_before_any_call(
    adapter: Adapter, own: LibraryInstrumentor, provider: Metrics
) -> None:
    own.instrument(meter_provider=provider.provider)
    subject = adapter.build("late")
    assert adapter.exported(provider, subject)["gauge"] == adapter.gauge(subject)


@subject
def test_an_error_inside_the_instrumentation_is_logged_once_per_site_and_never_reaches_the_caller(
    adapter: Adapter,
    metrics: Metrics,
    own: LibraryInstrumentor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain = [run_all(adapter, adapter.build("plain", fail_max=2), adapter.scenario()) for _ in range(2)]
    own.instrument(meter_provider=metrics.provider)
    adapter.break_recording(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="otel_trading.instrumentation"):
        seen = [run_all(adapter, adapter.build("binance", fail_max=2), adapter.scenario()) for _ in range(2)]
    assert seen == plain
    # report(site, exc): the first failure of a site at ERROR with its traceback, the others at DEBUG
    failed = [
        (r.levelno, str(r.args[0]), r.exc_info)
        for r in caplog.records
        if "failed" in r.msg and isinstance(r.args, tuple) and r.args
    ]
    first = [site for level, site, _ in failed if level == logging.ERROR]
    assert failed and sorted(first) == sorted({site for _, site, _ in failed})
    assert all(info and isinstance(info[1], RuntimeError) for level, _, info in failed if level == logging.ERROR)


# -- the library's own behaviour --------------------------------------------------------------------------


def check_sequence(adapter: Adapter, ops: list[str] | tuple[str, ...], variant: dict[str, Any]) -> None:
    """The same operations with and without the instrumentation: everything the bot can observe
    is the same, and the metrics say what the library's own account says."""
    adapter.forget()
    plain = adapter.play(adapter.build("plain", **variant), ops)
    metrics = make_metrics(with_views=True)
    instrumentor = adapter.instrumentor()
    instrumentor.instrument(meter_provider=metrics.provider)
    try:
        subject = adapter.build("sequence", **variant)
        steps = adapter.play(subject, ops)
        exported = adapter.exported(metrics, subject)  # while ``subject`` is alive: its gauge needs it
    finally:
        instrumentor.uninstrument()
        metrics.provider.shutdown()
    assert steps == plain
    assert exported == adapter.ledger(subject, steps)


@subject
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_library_behaves_identically_and_the_metrics_match_its_own_account(
    adapter: Adapter, data: st.DataObject
) -> None:
    ops = data.draw(st.lists(st.sampled_from(adapter.sequence_ops()), max_size=20), label="ops")
    variant = data.draw(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in adapter.variants.items()}))
    check_sequence(adapter, ops, variant)


@pytest.mark.parametrize(
    ("adapter", "example"),
    [(name, example) for name in SUBJECTS for example in range(len(ADAPTERS[name].examples))],
    indirect=["adapter"],
)
def test_known_sequences_behave_identically_and_match_the_librarys_own_account(adapter: Adapter, example: int) -> None:
    check_sequence(adapter, *adapter.examples[example])


# -- threads ----------------------------------------------------------------------------------------------

PER_THREAD = 600


@pytest.mark.parametrize("repeat", range(4))
@pytest.mark.parametrize("metrics", ["views", "direct_fallback"], indirect=True)  # "no_views" is "views"' path
@subject
def test_mixed_outcomes_from_threads_on_one_instance_are_exported_exactly(
    adapter: Adapter, recording: Metrics, repeat: int
) -> None:
    # One instance, eight threads (each with its own event loop for the asyncio APIs), a thread
    # switch after nearly every bytecode: every outcome must land exactly once where it belongs.
    mix: list[str] = [op for op in ("success", "failure", "excluded") if op in adapter.outcomes]
    alone = adapter.build("alone")
    expected = {op: {adapter.run(alone, op)} for op in mix}
    subject = adapter.build("kraken")
    done: Counter[str] = Counter()
    seen: defaultdict[str, set[Any]] = defaultdict(set)
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        mine: Counter[str] = Counter()
        outcomes: defaultdict[str, set[Any]] = defaultdict(set)
        start.wait()
        for i in range(PER_THREAD):
            op = mix[i % len(mix)]
            outcomes[op].add(adapter.run(subject, op))
            mine[op] += 1
        with lock:
            done.update(mine)
            for op, outcome in outcomes.items():
                seen[op] |= outcome

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_in_threads(8, worker)
    finally:
        sys.setswitchinterval(previous)
    assert {op: outcomes - adapter.thread_races for op, outcomes in seen.items()} == expected
    assert done == Counter({op: 8 * PER_THREAD // len(mix) for op in mix})
    exported = adapter.exported(recording, subject)
    assert exported == {**adapter.ledger(subject, []), **adapter.tally(done)}
    own = adapter.own_account(subject)
    assert {k: exported[k] for k in own} == own
