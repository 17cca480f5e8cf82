"""The compiled hot paths (each home's ``_hooks``) of the library instrumentations: built, chosen,
taken, invisible, lossless.

The libraries' own behaviour and every metric are checked on both hot paths by the contract suite
(``test_instrumentation_contract.py``) and the library test modules (``hot_path`` fixture). Here:
what is particular to the compiled modules themselves, and that the common case does take their
fast paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import importlib
import inspect
import logging
import math
import os
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import circuitbreaker
import purgatory
import pybreaker
import pyee
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker
from pyee.asyncio import AsyncIOEventEmitter

from otel_trading.instrumentation import (
    LIBRARY_INSTRUMENTORS,
    TradingInstrumentor,
    compiled_hot_paths,
    fast_path_counts,
    pure_python_reason,
)
from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.binding import BreakerBinding
from otel_trading.instrumentation.circuitbreaker import hooks as circuitbreaker_hooks
from otel_trading.instrumentation.libraries import COMPILED
from otel_trading.instrumentation.purgatory import hooks as purgatory_hooks
from otel_trading.instrumentation.pyee import hooks as pyee_hooks
from otel_trading.metric_contract import METRICS_BY_KEY
from otel_trading.recording import BOUNDS, Series, new_row, observe
from otel_trading.recording.rows import B0, MAX, MIN, SUM
from otel_trading.settings import OTEL_TRADING_PURE_PYTHON

from ..conftest import HOT_PATHS, Metrics, make_metrics, require_compiled_hot_paths, run_in_threads

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

#: (library, class, method) of each method the compiled hot paths replace.
REPLACED = [
    ("pybreaker", pybreaker.CircuitBreaker, "call"),
    ("circuitbreaker", circuitbreaker.CircuitBreaker, "call"),
    ("purgatory", SyncCircuitBreaker, "__enter__"),
    ("purgatory", SyncCircuitBreaker, "__exit__"),
    ("pyee", pyee.EventEmitter, "_call_handlers"),
    ("pyee", AsyncIOEventEmitter, "_emit_run"),
]
#: The otel_trading package folder.
PACKAGE = Path(hot_path.__file__).resolve().parents[2]


def compiled(library: str = "circuitbreaker") -> types.ModuleType:
    """``library``'s compiled hooks module (skips locally / fails in CI when not built)."""
    require_compiled_hot_paths()
    module = hot_path.load(library)
    assert module is not None
    return module


def test_the_compiled_hot_paths_are_built_where_ci_runs() -> None:
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("checked where CI=true: the test command builds them")
    assert compiled_hot_paths(), "CI installs with a C compiler; the compiled hot paths must be in use"


@pytest.mark.parametrize("hot_path", ["compiled", "python"], indirect=True)
def test_each_replaced_method_is_the_hot_path_chosen(hot_path: str, instrumented: Metrics) -> None:
    for library, owner, name in REPLACED:
        installed = vars(owner)[name]
        if hot_path == "compiled":
            assert isinstance(installed, compiled(library).Hook), (owner, name)
        else:
            assert type(installed) is types.FunctionType, (owner, name)


def test_every_home_with_compiled_hooks_is_listed_and_built_by_setup() -> None:
    sources = sorted(path.parent.name for path in (PACKAGE / "instrumentation").glob("*/_hooks.c"))
    if not sources:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no otel_trading/instrumentation/*/_hooks.c: CI tests the checkout, which has them")
        pytest.skip("an installed package: the C sources are in the sdist only")
    assert sources == sorted(COMPILED)
    for gone in ("_native.c", "_native.pyi"):  # the single module of before the homes
        assert not (PACKAGE / "instrumentation" / gone).exists(), gone
    for library in COMPILED:
        assert (PACKAGE / "instrumentation" / library / "_hooks.pyi").is_file(), library


def test_pure_python_variable_turns_the_compiled_paths_off(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled()
    monkeypatch.setenv(OTEL_TRADING_PURE_PYTHON, "true")
    assert hot_path._decide() == hot_path.TURNED_OFF
    monkeypatch.setenv(OTEL_TRADING_PURE_PYTHON, "false")
    assert hot_path._decide() is None


def test_a_malformed_pure_python_value_warns_and_keeps_the_compiled_paths(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiled()
    monkeypatch.setenv(OTEL_TRADING_PURE_PYTHON, "maybe")
    with caplog.at_level(logging.WARNING, logger="otel_trading"):
        assert hot_path._decide() is None
    assert [r.getMessage() for r in caplog.records if OTEL_TRADING_PURE_PYTHON in r.getMessage()]


def test_why_the_pure_python_paths_run_is_said_once_at_instrument_time(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hot_path, "enabled", False)
    monkeypatch.setattr(hot_path, "_why", hot_path.TURNED_OFF)
    monkeypatch.setattr(hot_path, "_announced", threading.Event())
    assert pure_python_reason() == hot_path.TURNED_OFF
    with caplog.at_level(logging.INFO, logger="otel_trading"):
        for _ in range(2):
            instrumentor = TradingInstrumentor()
            instrumentor.instrument(meter_provider=metrics.provider, config={})
            instrumentor.uninstrument()
    said = [r.getMessage() for r in caplog.records if "pure-Python hot paths" in r.getMessage()]
    assert said == [said[0]] and f"{OTEL_TRADING_PURE_PYTHON}=true turned them off" in said[0]


def test_nothing_is_said_when_the_compiled_paths_run(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiled()
    monkeypatch.setattr(hot_path, "_announced", threading.Event())
    assert pure_python_reason() is None
    with caplog.at_level(logging.INFO, logger="otel_trading"):
        instrumentor = TradingInstrumentor()
        instrumentor.instrument(meter_provider=metrics.provider, config={})
        instrumentor.uninstrument()
    assert not [r for r in caplog.records if "pure-Python hot paths" in r.getMessage()]


@pytest.mark.parametrize("library", COMPILED)
def test_a_module_that_is_not_built_is_the_reason_given(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"otel_trading.instrumentation.{library}._hooks"
    monkeypatch.setattr(hot_path, "enabled", True)
    monkeypatch.setattr(hot_path, "_loaded", {})
    monkeypatch.setitem(sys.modules, name, None)  # import fails
    monkeypatch.delattr(sys.modules[f"otel_trading.instrumentation.{library}"], "_hooks", raising=False)
    assert hot_path.load(library) is None
    why = pure_python_reason()
    assert why is not None and why.startswith(hot_path.NOT_BUILT) and name in why
    assert not compiled_hot_paths()


def test_a_free_threaded_interpreter_gets_the_pure_python_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1 if name == "Py_GIL_DISABLED" else real(name))
    assert hot_path._decide() == hot_path.FREE_THREADED


def test_switched_off_no_home_gets_its_compiled_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hot_path, "enabled", False)
    assert [hot_path.load(library) for library in COMPILED] == [None] * len(COMPILED)
    assert pure_python_reason() is not None and not compiled_hot_paths()


def test_importing_the_instrumentation_without_its_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    package = "otel_trading.instrumentation"
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.instrumentor", None)
    with pytest.raises(ImportError, match=r"pip install 'otel-trading\[instrumentation\]'") as raised:
        importlib.import_module("otel_trading.instrumentation")
    assert raised.value.name == "opentelemetry.instrumentation.instrumentor"


# -- invisible to introspection -----------------------------------------------------------------------


def test_compiled_replacements_introspect_as_the_functions_they_replace(metrics: Metrics, instrumentor: Any) -> None:
    compiled()
    before = {(o, n): vars(o)[n] for _, o, n in REPLACED}
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    for (owner, name), original in before.items():
        hook = vars(owner)[name]
        assert hook is not original
        assert inspect.isfunction(hook), (owner, name)
        assert hook.__wrapped__ is original
        assert hook.__code__ is original.__code__
        assert (hook.__name__, hook.__qualname__, hook.__doc__, hook.__module__) == (
            original.__name__,
            original.__qualname__,
            original.__doc__,
            original.__module__,
        )
        assert inspect.signature(hook) == inspect.signature(original)
        assert inspect.iscoroutinefunction(hook) is inspect.iscoroutinefunction(original)


def test_a_compiled_replacement_binds_to_instances_like_a_function(metrics: Metrics, instrumentor: Any) -> None:
    compiled()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    breaker = circuitbreaker.CircuitBreaker(name="binance")
    bound = breaker.call
    assert inspect.ismethod(bound)
    assert bound.__self__ is breaker
    assert bound.__func__ is vars(circuitbreaker.CircuitBreaker)["call"]
    assert circuitbreaker.CircuitBreaker.call is vars(circuitbreaker.CircuitBreaker)["call"]
    assert bound(lambda x: x + 1, 41) == 42
    assert circuitbreaker.CircuitBreaker.call(breaker, lambda: "unbound") == "unbound"


# -- the histogram update --------------------------------------------------------------------------


@pytest.mark.parametrize("library", COMPILED)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=20.0),
            st.sampled_from(BOUNDS).map(float),
            st.just(math.inf),
            st.floats(min_value=-1.0, max_value=0.0),
        ),
        max_size=60,
    )
)
def test_compiled_histogram_update_equals_the_python_one(library: str, values: list[float]) -> None:
    native = compiled(library)
    by_python, by_c = new_row(), new_row()
    for value in values:
        observe(by_python, value)
        assert native.observe(by_c, value) is True
    assert by_c == by_python
    assert [type(v) for v in by_c] == [type(v) for v in by_python]


@pytest.mark.parametrize(
    "row",
    [
        [0, 0],  # too short
        (0,) * 30,  # not a list
        [0, 0, 0, "sum", 0.0, 0.0, *([0] * 20)],  # not a row's columns
    ],
)
def test_compiled_histogram_update_refuses_what_is_not_a_row(row: Any) -> None:
    native = compiled()
    snapshot = list(row) if isinstance(row, list) else row
    assert native.observe(row, 0.001) is False
    assert (list(row) if isinstance(row, list) else row) == snapshot


# -- nothing kept per call ------------------------------------------------------------------------


def _blocks_grown_by(run: Callable[[], None], times: int) -> int:
    for _ in range(200):  # warm up: rows, caches, interned state
        run()
    gc.collect()  # failures leave exception/traceback cycles for the collector: count what survives it
    before = sys.getallocatedblocks()
    for _ in range(times):
        run()
    gc.collect()
    return sys.getallocatedblocks() - before


def _swallow(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        call()


def _workloads() -> dict[str, Callable[[], None]]:
    @circuitbreaker.circuit(name="leak-ok", failure_threshold=10**9)
    def ok() -> int:
        return 1

    @circuitbreaker.circuit(name="leak-fail", failure_threshold=10**9)
    def fail() -> None:
        raise ConnectionError("down")

    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=10**9)
    guarded_ok = factory("leak-purgatory-ok")(lambda: 1)

    @factory("leak-purgatory-fail")
    def guarded_fail() -> None:
        raise ConnectionError("down")

    emitter = pyee.EventEmitter()
    emitter.on("tick", lambda: None)
    emitter.on("boom", lambda: 1 / 0)
    scheduled = AsyncIOEventEmitter()  # sync handlers run inline: no loop needed
    scheduled.on("tick", lambda: None)
    scheduled.on("boom", lambda: 1 / 0)
    scheduled.on("error", lambda exc: None)
    breaker = pybreaker.CircuitBreaker(name="leak-pybreaker", fail_max=10**9)

    def pybreaker_fail() -> None:
        raise ConnectionError("down")

    return {
        "pybreaker success": lambda: breaker.call(int),
        "pybreaker failure": lambda: _swallow(lambda: breaker.call(pybreaker_fail)),
        "circuitbreaker success": ok,
        "circuitbreaker failure": lambda: _swallow(fail),
        "purgatory success": guarded_ok,
        "purgatory failure": lambda: _swallow(guarded_fail),
        "pyee emit": lambda: emitter.emit("tick"),
        "pyee handler error": lambda: _swallow(lambda: emitter.emit("boom")),
        "pyee asyncio emit": lambda: scheduled.emit("tick"),
        "pyee asyncio handler error": lambda: scheduled.emit("boom"),
    }


WORKLOADS = [
    "pybreaker success",
    "pybreaker failure",
    "circuitbreaker success",
    "circuitbreaker failure",
    "purgatory success",
    "purgatory failure",
    "pyee emit",
    "pyee handler error",
    "pyee asyncio emit",
    "pyee asyncio handler error",
]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_compiled_paths_keep_nothing_per_call(workload: str, instrumentor: Any) -> None:
    compiled()
    metrics = make_metrics(True)  # rows bound: the compiled paths take every call here
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    run = _workloads()[workload]
    # A leak of one object per call would be thousands of blocks; allow for allocator noise.
    assert _blocks_grown_by(run, 5_000) < 500


# -- many threads --------------------------------------------------------------------------------


def test_compiled_paths_count_exactly_from_many_threads(metrics: Metrics, instrumentor: Any) -> None:
    compiled()
    instrumentor.instrument(meter_provider=metrics.provider, config={})

    @circuitbreaker.circuit(name="threads")
    def call() -> None:
        return None

    breaker = pybreaker.CircuitBreaker(name="threads-pybreaker")

    emitter = pyee.EventEmitter()
    emitter.on("tick", lambda: None)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(2_000):
            call()
            breaker.call(int)
            emitter.emit("tick")

    run_in_threads(8, worker)
    assert metrics.value(N["breaker_successes"], name="threads") == 16_000
    assert metrics.value(N["breaker_successes"], name="threads-pybreaker") == 16_000
    assert metrics.value(N["bus_published"], event_type="tick") == 16_000
    assert metrics.value(N["bus_processed"], event_type="tick") == 16_000


# -- what the libraries' code does with exceptions, on both hot paths ------------------------------------
# Each scenario runs once on the plain library and once instrumented; everything it observes must match.


class Boom(Exception):
    pass


def _exception_state_after_a_handler_fails() -> list[Any]:
    ee = AsyncIOEventEmitter()
    seen: list[Any] = []
    ee.on("error", lambda exc: seen.append(("error event", type(exc).__name__, sys.exc_info()[1] is exc)))

    @ee.on("bad")
    def bad() -> None:
        raise Boom("handler")

    def gen() -> Any:
        yield
        ee.emit("bad")  # resumed while the caller handles KeyError("outer")
        seen.append(("after emit", repr(sys.exc_info()[1])))
        yield
        # resumed again with nothing being handled: nothing of the emit may linger here
        seen.append(("later", repr(sys.exc_info()[1])))
        try:
            raise TypeError("fresh")
        except TypeError as fresh:
            seen.append(("fresh context", repr(fresh.__context__)))
        yield

    g = gen()
    next(g)
    try:
        raise KeyError("outer")
    except KeyError:
        next(g)
    next(g)
    return seen


def _unhandled_asyncio_handler_error() -> tuple[str, str, bool]:
    ee = AsyncIOEventEmitter()  # no "error" listener: pyee raises the handler's exception

    @ee.on("bad")
    def bad() -> None:
        raise Boom("handler")

    with pytest.raises(Boom) as caught:
        ee.emit("bad")
    error = caught.value
    return repr(error), repr(error.__context__), error.__context__ is error


class _WatchingBreaker(circuitbreaker.CircuitBreaker):
    """Records what its __exit__ sees as the exception being handled; re-raises with a bare raise."""

    seen: list[Any] = []

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> Any:
        self.seen.append((repr(sys.exc_info()[1]), sys.exc_info()[1] is exc_value))
        if isinstance(exc_value, KeyError):
            raise
        if isinstance(exc_value, Boom):
            raise ValueError("from __exit__")
        return super().__exit__(exc_type, exc_value, tb)


def _exit_sees_the_blocks_exception() -> list[Any]:
    _WatchingBreaker.seen = []
    breaker = _WatchingBreaker(name="watching", failure_threshold=10**9)
    outcomes: list[Any] = []
    for error in (KeyError("key"), Boom("boom"), ConnectionError("down"), None):

        def guarded(error: BaseException | None = error) -> str:
            if error is not None:
                raise error
            return "fine"

        try:
            outcomes.append(breaker.call(guarded))
        except BaseException as exc:
            outcomes.append((repr(exc), repr(exc.__context__)))
    return [outcomes, _WatchingBreaker.seen]


def _keyword_named_like_a_parameter() -> list[str]:
    out = []
    for call in (
        lambda: circuitbreaker.CircuitBreaker(name="kw").call(lambda **kw: kw, func=1),
        lambda: pybreaker.CircuitBreaker(name="kw").call(lambda **kw: kw, self=1),
    ):
        try:
            out.append(repr(call()))
        except TypeError as exc:
            out.append(f"TypeError: {exc}")
    return out


#: What each scenario observes must be the same with and without the instrumentation.
SAME_AS_WITHOUT: dict[str, Callable[[], Any]] = {
    "a_failing_asyncio_handler_leaves_the_exception_state_as_pyee_does": _exception_state_after_a_handler_fails,
    "an_unhandled_asyncio_handler_error_is_chained_as_pyee_chains_it": _unhandled_asyncio_handler_error,
    "a_breakers_exit_sees_the_guarded_blocks_exception_as_being_handled": _exit_sees_the_blocks_exception,
    "keywords_named_like_calls_own_parameters_fail_as_in_the_library": _keyword_named_like_a_parameter,
}


@pytest.mark.parametrize("scenario", list(SAME_AS_WITHOUT))
@pytest.mark.parametrize("hot_path", HOT_PATHS, indirect=True)
def test_the_libraries_code_observes_exceptions_as_without_the_instrumentation(
    hot_path: str, metrics: Metrics, instrumentor: Any, scenario: str
) -> None:
    plain = SAME_AS_WITHOUT[scenario]()
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert SAME_AS_WITHOUT[scenario]() == plain


@pytest.mark.parametrize("hot_path", HOT_PATHS, indirect=True)
def test_a_purgatory_block_left_in_another_thread_is_counted(hot_path: str, instrumented: Metrics) -> None:
    factory = purgatory.SyncCircuitBreakerFactory()

    def block() -> Any:
        with factory.get_breaker("handed-over"):
            yield

    gen = block()
    next(gen)  # entered here
    done = threading.Thread(target=lambda: next(gen, None))
    done.start()  # left there
    done.join()
    assert instrumented.value(N["breaker_successes"], name="handed-over") == 1
    assert instrumented.histogram(N["breaker_latency"], name="handed-over").count == 1


@pytest.mark.parametrize("hot_path", HOT_PATHS, indirect=True)
def test_replaced_methods_can_be_weakly_referenced(hot_path: str, instrumented: Metrics) -> None:
    breaker = circuitbreaker.CircuitBreaker(name="weak")
    method = weakref.WeakMethod(breaker.call)
    assert method()(lambda: "called") == "called"
    assert weakref.ref(vars(circuitbreaker.CircuitBreaker)["call"])() is vars(circuitbreaker.CircuitBreaker)["call"]


def _guarded_call(native: types.ModuleType, **changed: Any) -> Any:
    fields: dict[str, Any] = {
        "slow": lambda *a: None,
        "entries": {},
        "closed": object(),
        "raised": lambda *a: None,
        "record": lambda *a: None,
        "entry_type": circuitbreaker_hooks.HotEntry,
        "series_type": Series,
    }
    return native.guarded_call(**{**fields, **changed})


def test_a_hook_wrapping_itself_raises_recursion_error_instead_of_crashing() -> None:
    hook = _guarded_call(compiled("circuitbreaker"))
    hook.__wrapped__ = hook
    with pytest.raises(RecursionError):
        _ = hook.__code__


@pytest.mark.parametrize("library", COMPILED)
def test_the_row_layout_is_checked_before_it_is_used(library: str) -> None:
    native = compiled(library)
    with pytest.raises(ValueError, match="before b0"):
        native.configure((0.1,), 1000, 0, 0, 0)
    assert native.observe(new_row(), 0.05) is True  # the layout in use is unchanged


# -- the common case takes the fast path ----------------------------------------------------------------
# Every compiled hook counts the calls it served itself (hits) and those it handed to its pure-Python
# twin (misses). Ordinary calls must be hits: a class of ours whose slot the C reads under another
# name, or a library attribute it no longer finds, would send them all to the twin without a word.

CALLS = 200


def _pybreaker_calls() -> Iterator[Callable[[], Any]]:
    breaker = pybreaker.CircuitBreaker(name="fast-pybreaker")
    yield lambda: breaker.call(int)


def _circuitbreaker_calls() -> Iterator[Callable[[], Any]]:
    @circuitbreaker.circuit(name="fast-circuitbreaker")
    def closed_and_succeeding() -> int:
        return 1

    yield closed_and_succeeding


def _purgatory_calls() -> Iterator[Callable[[], Any]]:
    factory = purgatory.SyncCircuitBreakerFactory()

    def block() -> None:
        with factory.get_breaker("fast-purgatory"):
            pass

    yield block


def _pyee_calls() -> Iterator[Callable[[], Any]]:
    emitter = pyee.EventEmitter()
    emitter.on("tick", lambda: None)
    emitter.emit("tick")  # its first emit makes the event's label (on the twin)
    yield lambda: emitter.emit("tick")


#: library -> (the calls, the hooks they go through, as fast_path_counts() names them)
COMMON_CASES: dict[str, tuple[Callable[[], Iterator[Callable[[], Any]]], tuple[str, ...]]] = {
    "pybreaker": (_pybreaker_calls, ("CircuitBreaker.call",)),
    "circuitbreaker": (_circuitbreaker_calls, ("CircuitBreaker.call",)),
    "purgatory": (_purgatory_calls, ("SyncCircuitBreaker.__enter__", "SyncCircuitBreaker.__exit__")),
    "pyee": (_pyee_calls, ("EventEmitter._call_handlers",)),
}


@pytest.mark.parametrize("library", COMPILED)
def test_the_common_case_takes_the_fast_path(library: str, instrumentor: Any) -> None:
    compiled(library)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        instrumentor.instrument(meter_provider=provider, config={})
        calls, hooks = COMMON_CASES[library]
        call = next(calls())
        before = fast_path_counts()[library]
        for _ in range(CALLS):
            call()
        after = fast_path_counts()[library]
        for hook in hooks:
            hits = after[hook][0] - before.get(hook, (0, 0))[0]
            misses = after[hook][1] - before.get(hook, (0, 0))[1]
            # At most one miss: the first call in a thread makes its row on the twin.
            assert hits >= CALLS - 1 and misses <= 1, (library, hook, hits, misses)
        # The public reading is each installed hook's own.
        (library_instrumentor,) = [cls() for cls in LIBRARY_INSTRUMENTORS if cls.target == library]
        installed = {f"{o.__qualname__}.{n}": vars(o)[n] for o, n in library_instrumentor.patched}
        for hook, counts in after.items():
            assert installed[hook].fast_path_counts == counts
    finally:
        provider.shutdown()


def test_fast_path_counts_name_only_the_compiled_hooks_installed_now(instrumentor: Any, metrics: Metrics) -> None:
    compiled()
    assert fast_path_counts() == {}
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    counts = fast_path_counts()
    assert {(library, hook) for library, hooks in counts.items() for hook in hooks} == {
        (library, f"{owner.__qualname__}.{name}") for library, owner, name in REPLACED
    }
    assert all(type(n) is int for hooks in counts.values() for pair in hooks.values() for n in pair)
    instrumentor.uninstrument()
    assert fast_path_counts() == {}


def test_the_pure_python_paths_have_no_fast_path_counts(instrumentor: Any, metrics: Metrics) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hot_path, "enabled", False)
        instrumentor.instrument(meter_provider=metrics.provider, config={})
        assert fast_path_counts() == {}


# -- OpenTelemetry's context: a call made while it holds something goes to the twin ----------------------
# The twins record a duration with a trace exemplar when OpenTelemetry's current Context is not empty;
# the C paths do not, so each hook that records a duration hands such a call to its twin, deciding once,
# at the entry of the call. purgatory's __enter__ records no duration and stays compiled: its exit decides.

#: library -> the hook that decides, as fast_path_counts() names it
DECIDES = {
    "pybreaker": "CircuitBreaker.call",
    "circuitbreaker": "CircuitBreaker.call",
    "purgatory": "SyncCircuitBreaker.__exit__",
    "pyee": "EventEmitter._call_handlers",
}


def _named_call(library: str, name: str) -> Callable[[], Any]:
    """One ordinary call of ``library``'s instrumented path, on a breaker or event named ``name``."""
    if library == "pybreaker":
        breaker = pybreaker.CircuitBreaker(name=name)
        return lambda: breaker.call(int)
    if library == "circuitbreaker":

        def closed_and_succeeding() -> int:
            return 1

        guarded: Callable[[], Any] = circuitbreaker.circuit(name=name)(closed_and_succeeding)
        return guarded
    if library == "purgatory":
        wrapper = purgatory.SyncCircuitBreakerFactory().get_breaker(name)

        def block() -> None:
            with wrapper:
                pass

        return block
    emitter = pyee.EventEmitter()
    emitter.on(name, lambda: None)
    return lambda: emitter.emit(name)


def _sampled_span() -> contextlib.AbstractContextManager[Any]:
    """A sampled span made current, as a traced request handler has it."""
    span_context = SpanContext(
        trace_id=0x5CE0E9A56015FEC5AADFA328AE398115,
        span_id=0xD5A4FE2E3B0C3C2B,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.use_span(NonRecordingSpan(span_context))


@contextlib.contextmanager
def _attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


#: Ways OpenTelemetry's current Context holds something.
HELD: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "sampled_span": _sampled_span,
    "any_value": lambda: _attached(otel_context.set_value("otel-trading-test", 1)),
}
#: Ways it is empty.
EMPTY: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "nothing_attached": contextlib.nullcontext,
    "empty_context_attached": lambda: _attached(otel_context.Context()),
}


def _counted(
    library: str, call: Callable[[], Any], around: Callable[[], contextlib.AbstractContextManager[Any]]
) -> dict[str, tuple[int, int]]:
    """(hits, misses) of each of ``library``'s hooks over CALLS calls made inside ``around()``."""
    before = fast_path_counts()[library]
    with around():
        for _ in range(CALLS):
            call()
    after = fast_path_counts()[library]
    return {
        hook: (hits - before.get(hook, (0, 0))[0], misses - before.get(hook, (0, 0))[1])
        for hook, (hits, misses) in after.items()
    }


@pytest.mark.parametrize("empty", EMPTY)
@pytest.mark.parametrize("library", COMPILED)
def test_calls_with_no_span_stay_on_the_fast_path(library: str, empty: str, instrumentor: Any) -> None:
    compiled(library)
    metrics = make_metrics(True)
    try:
        instrumentor.instrument(meter_provider=metrics.provider, config={})
        call = _named_call(library, f"no-span-{library}")
        counts = _counted(library, call, EMPTY[empty])
        hits, misses = counts[DECIDES[library]]
        # At most one miss: the first call in a thread makes its row on the twin.
        assert hits >= CALLS - 1 and misses <= 1, (library, counts)
    finally:
        metrics.provider.shutdown()


@pytest.mark.parametrize("held", HELD)
@pytest.mark.parametrize("library", COMPILED)
def test_calls_in_a_span_take_the_twin(library: str, held: str, instrumentor: Any) -> None:
    compiled(library)
    metrics = make_metrics(True)
    try:
        instrumentor.instrument(meter_provider=metrics.provider, config={})
        call = _named_call(library, f"span-{library}")
        call()  # its row made (the first call in a thread is the twin's anyway)
        counts = _counted(library, call, HELD[held])
        assert counts[DECIDES[library]] == (0, CALLS), (library, counts)
        if library == "purgatory":  # the enter records no duration: compiled whatever the context
            assert counts["SyncCircuitBreaker.__enter__"] == (CALLS, 0), counts
    finally:
        metrics.provider.shutdown()


def _recorded(metrics: Metrics, name: str) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    """What was recorded for the breaker or event ``name`` (``*`` in its place): each counter's and
    gauge's value, each histogram's count (its sum and buckets are timings)."""
    recorded = {}
    for metric, data in metrics.collect().items():
        for point in data.data.data_points:
            attributes = dict(point.attributes)
            if name not in attributes.values():
                continue
            key = (metric, tuple(sorted((k, "*" if v == name else v) for k, v in attributes.items())))
            recorded[key] = point.count if isinstance(point, HistogramDataPoint) else point.value
    return recorded


@pytest.mark.parametrize("library", COMPILED)
def test_calls_in_a_span_record_what_calls_outside_one_record(
    library: str, metrics: Metrics, instrumentor: Any
) -> None:
    compiled(library)
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    plain, traced = _named_call(library, "plain"), _named_call(library, "traced")
    for _ in range(CALLS):
        plain()
    with _sampled_span():
        for _ in range(CALLS):
            traced()
    outside, inside = _recorded(metrics, "plain"), _recorded(metrics, "traced")
    assert CALLS in outside.values(), outside  # a histogram's count (or a counter) saw every call
    assert inside == outside


async def test_asyncio_events_in_a_span_record_what_events_outside_one_record(
    metrics: Metrics, instrumentor: Any
) -> None:
    # pyee's _emit_run hook records no duration (the twin's helpers it calls do): it stays compiled
    # and serves the handlers of an event whose _call_handlers went to the twin.
    compiled("pyee")
    instrumentor.instrument(meter_provider=metrics.provider, config={})
    emitter = AsyncIOEventEmitter()
    emitter.add_listener("error", lambda exc: None)
    for name in ("plain", "traced"):
        emitter.on(name, lambda: None)
        emitter.on(name, _coroutine_handler)
        emitter.on(name, _raising_handler)
    for _ in range(10):
        emitter.emit("plain")
        with _sampled_span():
            emitter.emit("traced")
    await asyncio.sleep(0.01)
    outside, inside = _recorded(metrics, "plain"), _recorded(metrics, "traced")
    assert 10 in outside.values(), outside
    assert inside == outside


async def _coroutine_handler() -> None:
    await asyncio.sleep(0)


def _raising_handler() -> None:
    raise ValueError("handler failed")


@pytest.mark.parametrize("library", COMPILED)
def test_a_module_configured_without_the_context_variable_never_looks(library: str, instrumentor: Any) -> None:
    native = compiled(library)
    metrics = make_metrics(True)
    try:
        instrumentor.instrument(meter_provider=metrics.provider, config={})
        call = _named_call(library, f"unconfigured-{library}")
        call()
        native.configure(BOUNDS, SUM, MIN, MAX, B0)  # the context variable left out: None
        counts = _counted(library, call, _sampled_span)
        assert counts[DECIDES[library]] == (CALLS, 0), (library, counts)
    finally:
        native.configure(BOUNDS, SUM, MIN, MAX, B0, hot_path.otel_context_var())
        metrics.provider.shutdown()


@pytest.mark.parametrize("library", COMPILED)
def test_configure_refuses_a_context_that_is_not_a_context_variable(library: str) -> None:
    native = compiled(library)
    wrong = otel_context.get_current()  # the Context itself, not the variable that holds it
    with pytest.raises(TypeError, match=r"'context' \(the 6th argument\) must be a contextvars.ContextVar .*Context"):
        native.configure(BOUNDS, SUM, MIN, MAX, B0, wrong)
    assert native.observe(new_row(), 0.05) is True  # the layout in use is unchanged


def test_the_context_variable_is_opentelemetrys_current_context() -> None:
    runtime: Any = otel_context._RUNTIME_CONTEXT  # a ContextVarsRuntimeContext, unless configured otherwise
    assert hot_path.otel_context_var() is runtime._current_context


def test_another_runtime_context_gives_no_context_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    class OtherRuntimeContext:
        _current_context: contextvars.ContextVar[Any] = contextvars.ContextVar("current_context")

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", OtherRuntimeContext())
    assert hot_path.otel_context_var() is None


# -- what the C reads of our own objects: checked when a hook is made -------------------------------------


def _without(cls: type, *names: str) -> type:
    """``cls``'s slots, ``names`` renamed (as a refactoring that missed the C would leave them)."""
    inherited = [s for klass in reversed(cls.__mro__) for s in vars(klass).get("__slots__", ())]
    slots = [f"{s}_renamed" if s in names else s for s in inherited if s != "__weakref__"]
    return type(f"Renamed{cls.__name__}", (), {"__slots__": tuple(slots)})


def _factories() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each factory with arguments it accepts: library, factory -> (library, keyword arguments)."""

    def anything(*args: Any) -> None:
        return None

    purgatory_blocks = compiled("purgatory").OpenBlocks()
    return {
        "guarded_call": (
            "circuitbreaker",
            {
                "slow": anything,
                "entries": {},
                "closed": "closed",
                "raised": anything,
                "record": anything,
                "entry_type": circuitbreaker_hooks.HotEntry,
                "series_type": Series,
            },
        ),
        "locked_call": (
            "pybreaker",
            {
                "slow": anything,
                "bindings": {},
                "open_state": pybreaker.CircuitOpenState,
                "after_error": anything,
                "record": anything,
                "generator": types.GeneratorType,
                "binding_type": BreakerBinding,
                "series_type": Series,
            },
        ),
        "paired_exit": (
            "purgatory",
            {
                "slow": anything,
                "orig": anything,
                "starts": {},
                "circuits": {},
                "record": anything,
                "blocks": purgatory_blocks,
                "circuit_type": purgatory_hooks._Circuit,
                "series_type": Series,
            },
        ),
        "emitter_call": (
            "pyee",
            {
                "slow": anything,
                "orig": anything,
                "bindings": {},
                "sync": pyee_hooks.SYNC,
                "scheduled": pyee_hooks.SCHEDULED,
                "uplift": [None],
                "current": pyee_hooks._CURRENT,
                "end": anything,
                "binding_type": pyee_hooks.EmitterBinding,
                "event_type": pyee_hooks._Event,
                "series_type": Series,
            },
        ),
    }


#: (factory, its argument naming one of our classes, the slots the C reads on it)
SLOTS_READ = [
    ("guarded_call", "entry_type", ("local", "hot")),
    ("guarded_call", "series_type", ("fast",)),
    ("locked_call", "binding_type", ("exclusive", "hot")),
    ("locked_call", "series_type", ("fast",)),
    ("paired_exit", "circuit_type", ("local", "hot")),
    ("paired_exit", "series_type", ("fast",)),
    ("emitter_call", "binding_type", ("events", "mode")),
    ("emitter_call", "event_type", ("local", "hot")),
    ("emitter_call", "series_type", ("fast",)),
]


@pytest.mark.parametrize("factory", sorted({f for f, _, _ in SLOTS_READ}))
def test_each_factory_accepts_our_classes_as_they_are(factory: str) -> None:
    library, arguments = _factories()[factory]
    hook = getattr(compiled(library), factory)(**arguments)
    assert hook.fast_path_counts == (0, 0)


@pytest.mark.parametrize(("factory", "argument", "slots"), SLOTS_READ)
def test_a_factory_given_a_class_lacking_a_slot_it_reads_raises_type_error_naming_it(
    factory: str, argument: str, slots: tuple[str, ...]
) -> None:
    library, arguments = _factories()[factory]
    make = getattr(compiled(library), factory)
    for slot in slots:
        with pytest.raises(TypeError, match=rf"{argument}=\S+ has no slot '{slot}'") as raised:
            make(**{**arguments, argument: _without(arguments[argument], slot)})
        assert [other for other in slots if other != slot and f"'{other}'" in str(raised.value)] == []
    if len(slots) > 1:  # every missing one is named at once
        with pytest.raises(TypeError, match=r"has no slots " + ", ".join(f"'{s}'" for s in slots)):
            make(**{**arguments, argument: _without(arguments[argument], *slots)})


def test_a_pyee_factory_given_a_dispatch_holder_without_dispatch_raises_type_error_naming_it() -> None:
    library, arguments = _factories()["emitter_call"]
    native = compiled(library)

    class Holder(threading.local):
        current: Any = None  # ``dispatch`` renamed

    with pytest.raises(TypeError, match="'dispatch'"):
        native.emitter_call(**{**arguments, "current": Holder()})
    with pytest.raises(TypeError, match="'dispatch'"):
        native.emit_run(slow=print, orig=print, current=Holder(), on_error=print, after=print)


@pytest.mark.parametrize("factory", sorted({f for f, _, _ in SLOTS_READ}))
def test_factories_take_keyword_arguments_only_each_required(factory: str) -> None:
    library, arguments = _factories()[factory]
    make = getattr(compiled(library), factory)
    with pytest.raises(TypeError, match="keyword arguments only"):
        make(*arguments.values())
    for name in arguments:
        with pytest.raises(TypeError, match=f"missing keyword argument '{name}'"):
            make(**{k: v for k, v in arguments.items() if k != name})
    with pytest.raises(TypeError, match="unexpected keyword argument 'refs'"):
        make(**arguments, refs=())


def test_a_renamed_slot_fails_at_instrument_time_and_leaves_the_pure_python_twin(
    metrics: Metrics, instrumentor: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compiled("circuitbreaker")
    monkeypatch.setattr(circuitbreaker_hooks, "HotEntry", _without(circuitbreaker_hooks.HotEntry, "hot"))
    with caplog.at_level(logging.ERROR, logger="otel_trading"):
        instrumentor.instrument(meter_provider=metrics.provider, config={})
    assert type(vars(circuitbreaker.CircuitBreaker)["call"]) is types.FunctionType  # the twin
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "circuitbreaker's CircuitBreaker.call" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "has no slot 'hot'" in str(errors[0].exc_info[1])
    assert "circuitbreaker" not in fast_path_counts()


# -- what the C reads of the libraries: declared on both sides -------------------------------------------

#: What a ``with`` statement in a checked function relies on.
WITH_PROTOCOL = {"__enter__", "__exit__"}


def _declared_names(library: str) -> set[str]:
    """Every name the home's reliance declares: its names and the names in its shapes."""
    reliance = importlib.import_module(f"otel_trading.instrumentation.{library}.reliance").RELIANCE
    shaped = {name for function in reliance.functions for shape in function.shapes for name in shape.names}
    return set(reliance.names()) | shaped


@pytest.mark.parametrize("library", COMPILED)
def test_what_the_c_relies_on_of_the_library_is_declared_on_the_python_side(library: str) -> None:
    relies_on = compiled(library).RELIES_ON
    assert isinstance(relies_on, tuple) and relies_on and len(set(relies_on)) == len(relies_on)
    undeclared = set(relies_on) - _declared_names(library) - WITH_PROTOCOL
    assert not undeclared, f"{library}'s _hooks.c reads {sorted(undeclared)}, undeclared by its home's reliance"
    source = PACKAGE / "instrumentation" / library / "_hooks.c"
    if source.is_file():  # the comment block at its top lists them too
        header = source.read_text().split("*/", 1)[0]
        assert [name for name in relies_on if name not in header] == []
