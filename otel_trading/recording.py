"""The recording layer: hot-path accumulation in plain lists, exported through OTel instruments.

Components never call an SDK instrument per event. They bump plain per-thread rows (one row per
thread per component, so counts stay exact without a lock) and the OTel instruments read those
rows when a reader collects: observable counters and gauges for sums and states, and the
``sdk_bridge`` aggregation for histograms. One ``MetricsRegistry`` exists per meter provider and
owns every instrument, created once with ``get_meter(__name__, __version__, meter_provider)``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from random import random
from typing import Any, Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_trading import metric_contract as mc
from otel_trading.environment_variables import (
    OTEL_TRADING_DISABLED_METRICS,
    OTEL_TRADING_HISTOGRAM_SAMPLE_RATE,
    OTEL_TRADING_MAX_LABEL_VALUES,
)
from otel_trading.sdk_bridge import PRIMING
from otel_trading.version import __version__

_logger = logging.getLogger(__name__)

METER_NAME = __name__

# Row layout shared by every component: three counters, then one duration histogram.
C0, C1, C2, SUM, MIN, MAX, B0 = 0, 1, 2, 3, 4, 5, 6
BOUNDS: tuple[float, ...] = mc.DURATION_BUCKETS
WIDTH = B0 + len(BOUNDS) + 1

DEFAULT_MAX_LABEL_VALUES = 1000

Row = list[Any]


def new_row() -> Row:
    row: Row = [0] * WIDTH
    row[SUM] = 0.0
    row[MIN] = math.inf
    row[MAX] = -math.inf
    return row


def observe(row: Row, value: float) -> None:
    """Add one duration to a row's histogram columns."""
    row[SUM] += value
    if value < row[MIN]:
        row[MIN] = value
    if value > row[MAX]:
        row[MAX] = value
    row[B0 if value <= BOUNDS[0] else B0 + bisect_left(BOUNDS, value)] += 1


def sample_gaps(rate: float) -> Callable[[], int] | None:
    """Gaps between sampled events for a ``rate`` in (0, 1); ``None`` means time every event.

    Drawing the geometric gap to the next sampled event is statistically the same as an
    independent ``random() < rate`` per event, but costs one decrement per unsampled event and no
    clock read: what makes ``sample_rate=0.1`` actually cheaper than 1.0 on a tick path.
    """
    if rate >= 1.0:
        return None
    if rate <= 0.0:
        raise ValueError("sample_gaps needs a rate > 0")
    scale = 1.0 / math.log1p(-rate)

    def gap() -> int:
        return int(math.log(1.0 - random()) * scale) + 1

    return gap


def add_row(into: Row, row: Row) -> None:
    for i in range(WIDTH):
        if i == MIN:
            if row[MIN] < into[MIN]:
                into[MIN] = row[MIN]
        elif i == MAX:
            if row[MAX] > into[MAX]:
                into[MAX] = row[MAX]
        else:
            into[i] += row[i]


class RowSource(Protocol):
    def rows(self) -> Iterable[Row]: ...


class SingleRow:
    """A row written by one thread only (an event bus runs on one event loop)."""

    __slots__ = ("row",)

    def __init__(self) -> None:
        self.row = new_row()

    def rows(self) -> Iterable[Row]:
        return (self.row,)


class ThreadRows:
    """One row per writing thread: exact counts from many threads, no lock on the hot path.

    Rows of threads that have ended are folded into ``_retired`` at collection, so memory is
    bounded by the number of live threads.
    """

    __slots__ = ("_lock", "_retired", "_rows", "local")

    def __init__(self) -> None:
        # ``local.row`` is this thread's row once ``row()`` made it; hot paths read it directly.
        self.local = threading.local()
        self._rows: list[tuple[threading.Thread, Row]] = []
        self._lock = threading.Lock()
        self._retired = new_row()

    def row(self) -> Row:
        try:
            return self.local.row  # type: ignore[no-any-return]
        except AttributeError:
            row = new_row()
            with self._lock:
                self._rows.append((threading.current_thread(), row))
            self.local.row = row
            return row

    def rows(self) -> Iterable[Row]:
        with self._lock:
            live = []
            for thread, row in self._rows:
                if thread.is_alive():
                    live.append((thread, row))
                else:
                    add_row(self._retired, row)
            self._rows = live
            return [self._retired, *(row for _, row in live)]


class HistogramSeries:
    """One label set of one component kind: its row sources and its histogram's export state."""

    def __init__(self, registry: MetricsRegistry, histogram: Any, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.boundaries = BOUNDS
        self._registry = registry
        self._histogram = histogram
        self._lock = threading.Lock()
        self._sources: dict[int, RowSource] = {}
        self._retired = new_row()
        # Sources of garbage-collected components, folded into _retired at the next collection.
        self._retiring: list[RowSource] = []
        self.components: weakref.WeakSet[Any] = weakref.WeakSet()
        self._owned: weakref.WeakKeyDictionary[Any, RowSource] = weakref.WeakKeyDictionary()
        self.transitions: dict[tuple[str, str], int] = {}
        # Histogram export state; see sdk_bridge for the protocol.
        self.bridged = False
        self.bridge_seen = False
        self.direct = False
        self.delta_mark: tuple[float, tuple[int, ...]] | None = None

    # -- sources --------------------------------------------------------------------------------
    def attach(self, component: Any, source: RowSource) -> None:
        with self._lock:
            self._sources[id(source)] = source
            self.components.add(component)
        weakref.finalize(component, self._retire, source)

    def source_for(self, component: Any, make: Callable[[], RowSource]) -> RowSource:
        """The source ``component`` already feeds this series through, else a new attached one.

        Event classes sharing a label value (folded past the cardinality limit, or same-named)
        then share one row per component: memory and collection cost follow series, not classes.
        """
        with self._lock:
            source = self._owned.get(component)
        if source is None:
            source = make()
            self.attach(component, source)
            with self._lock:
                self._owned[component] = source
        return source

    def _retire(self, source: RowSource) -> None:
        # A weakref finalizer: the garbage collector may run it at any allocation, including in
        # this thread while it holds self._lock, so taking the lock here could deadlock. Queue the
        # source (list.append is atomic); it keeps counting as a live source until folded.
        self._retiring.append(source)

    def _fold_retiring(self) -> None:
        """Fold queued sources of collected components into ``_retired`` (lock held)."""
        while self._retiring:
            source = self._retiring.pop()
            if self._sources.pop(id(source), None) is not None:
                for row in source.rows():
                    add_row(self._retired, row)

    def total_row(self) -> Row:
        total = new_row()
        with self._lock:
            self._fold_retiring()
            add_row(total, self._retired)
            sources = list(self._sources.values())
        for source in sources:
            for row in source.rows():
                add_row(total, row)
        return total

    def totals(self) -> tuple[float, float, float, tuple[int, ...]]:
        """(sum, min, max, bucket counts) of the histogram, for the SDK bridge."""
        t = self.total_row()
        return t[SUM], t[MIN], t[MAX], tuple(t[B0:])

    def count_transition(self, from_state: str, to_state: str) -> None:
        key = (from_state, to_state)
        with self._lock:
            self.transitions[key] = self.transitions.get(key, 0) + 1

    # -- histogram, slow path ---------------------------------------------------------------------
    def observe_slow(self, row: Row, value: float) -> None:
        """Called while the series is not (or no longer) bound to the SDK bridge."""
        if self._histogram is None:
            return
        if self.direct:
            self._record_direct(value)
            return
        with self._lock:
            if not self.bridged:
                if not self._registry.has_sdk_provider():
                    # No provider yet: keep the value locally, bind later.
                    observe(row, value)
                    return
                self.bridge_seen = False
                PRIMING.series = self
                try:
                    self._histogram.record(value, self.attributes)
                except Exception:  # pragma: no cover - the SDK swallows its own errors
                    _logger.exception("otel-trading: recording %s failed", self.attributes)
                finally:
                    PRIMING.series = None
                if self.bridge_seen:
                    self.bridged = True
                else:
                    # No otel-trading view on this provider: the SDK aggregated the value itself.
                    self.direct = True
                    return
        observe(row, value)

    def _record_direct(self, value: float) -> None:
        try:
            self._histogram.record(value, self.attributes)
        except Exception:  # pragma: no cover - defensive: telemetry never raises into trading
            _logger.exception("otel-trading: recording %s failed", self.attributes)


def _env_disabled() -> frozenset[str]:
    raw = os.environ.get(OTEL_TRADING_DISABLED_METRICS, "")
    return parse_disabled_metrics(raw, source=OTEL_TRADING_DISABLED_METRICS)


def parse_disabled_metrics(raw: str | Iterable[str], source: str = "disabled_metrics") -> frozenset[str]:
    """Validate a list of metric groups/keys; returns the set of disabled metric keys."""
    items = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else [str(p).strip() for p in raw]
    groups = {g.value: g for g in mc.MetricGroup}
    keys: set[str] = set()
    bad: list[str] = []
    for item in filter(None, items):
        if item in groups:
            keys.update(m.key for m in mc.METRICS if m.group is groups[item])
        elif item in mc.METRICS_BY_KEY:
            keys.add(item)
        elif any(m.prometheus_name == item for m in mc.METRICS):
            keys.update(m.key for m in mc.METRICS if m.prometheus_name == item)
        else:
            bad.append(item)
    if bad:
        allowed = sorted(groups) + sorted(mc.METRICS_BY_KEY)
        raise ValueError(f"{source}: unknown metric group or key {bad!r}; allowed: {', '.join(allowed)}")
    return frozenset(keys)


def resolve_sample_rate(sample_rate: float | None) -> float:
    """The component's ``sample_rate``, defaulting to OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, else 1.0."""
    from otel_trading.validation import check_rate

    if sample_rate is not None:
        return check_rate("sample_rate", sample_rate)
    raw = os.environ.get(OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, "").strip()
    if not raw:
        return 1.0
    try:
        return check_rate(OTEL_TRADING_HISTOGRAM_SAMPLE_RATE, float(raw))
    except ValueError:
        raise ValueError(f"{OTEL_TRADING_HISTOGRAM_SAMPLE_RATE} must be a number in [0, 1], got {raw!r}") from None


def _env_max_label_values() -> int:
    raw = os.environ.get(OTEL_TRADING_MAX_LABEL_VALUES)
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_LABEL_VALUES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{OTEL_TRADING_MAX_LABEL_VALUES} must be an integer >= 1, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{OTEL_TRADING_MAX_LABEL_VALUES} must be an integer >= 1, got {raw!r}")
    return value


class _LabelFold:
    """Bounds the distinct values of one data-derived label; extra values share one series."""

    def __init__(self, label: str, limit: int) -> None:
        self.label = label
        self.limit = limit
        self.folded = 0
        self._warned = False

    def full(self, known: dict[str, HistogramSeries]) -> bool:
        return len(known) >= self.limit

    def fold(self, value: str, known: dict[str, HistogramSeries]) -> str:
        if value in known or len(known) < self.limit:
            return value
        self.folded += 1
        if not self._warned:
            self._warned = True
            _logger.warning(
                "otel-trading: more than %d distinct %r label values; further values are folded into %r "
                "(totals stay exact; %s counts them). Raise %s if this is expected.",
                self.limit,
                self.label,
                mc.OVERFLOW_LABEL_VALUE,
                mc.LABEL_VALUES_FOLDED.prometheus_name,
                OTEL_TRADING_MAX_LABEL_VALUES,
            )
        return mc.OVERFLOW_LABEL_VALUE


class MetricsRegistry:
    """Every otel-trading instrument of one meter provider, and the series they report."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        self._explicit_provider = meter_provider
        self.meter = otel_metrics.get_meter(METER_NAME, __version__, meter_provider)
        self.disabled = _env_disabled()
        max_values = _env_max_label_values()
        self._lock = threading.Lock()
        self.breaker_series: dict[str, HistogramSeries] = {}
        self.event_series: dict[str, HistogramSeries] = {}
        self.breaker_fold = _LabelFold("name", max_values)
        self.event_fold = _LabelFold("event_type", max_values)
        self.buses: weakref.WeakSet[Any] = weakref.WeakSet()
        self._instruments: dict[str, Any] = {}
        # Collection hooks (e.g. batching's flush), held weakly; see add_collection_hook().
        self._hooks: list[Callable[[], Callable[[], object] | None]] = []
        self._hooked = False
        self._trigger_lock = threading.Lock()
        self._create_instruments()

    # -- instruments ------------------------------------------------------------------------------
    def enabled(self, key: str) -> bool:
        return key not in self.disabled

    def group_enabled(self, group: mc.MetricGroup) -> bool:
        """False when every metric of ``group`` is disabled: its components then skip all recording."""
        return any(m.key not in self.disabled for m in mc.METRICS if m.group is group)

    def _create_instruments(self) -> None:
        m = self.meter
        counters: dict[str, Callable[[CallbackOptions], Iterable[Observation]]] = {
            mc.BREAKER_SUCCESSES.key: self._column(self.breaker_series, C0),
            mc.BREAKER_FAILURES.key: self._column(self.breaker_series, C1),
            mc.BREAKER_REJECTED.key: self._column(self.breaker_series, C2),
            mc.BREAKER_TRANSITIONS.key: self._transitions,
            mc.BUS_PUBLISHED.key: self._column(self.event_series, C0),
            mc.BUS_PROCESSED.key: self._column(self.event_series, C1),
            mc.BUS_HANDLER_ERRORS.key: self._column(self.event_series, C2),
            mc.LABEL_VALUES_FOLDED.key: self._folded,
        }
        gauges: dict[str, Callable[[CallbackOptions], Iterable[Observation]]] = {
            mc.BREAKER_STATE.key: self._breaker_states,
            mc.BUS_QUEUE_SIZE.key: self._queue_sizes,
            mc.BUS_SUBSCRIBERS.key: self._subscribers,
        }
        for spec in mc.METRICS:
            if not self.enabled(spec.key):
                continue
            if spec.kind is mc.InstrumentKind.COUNTER:
                inst = m.create_observable_counter(
                    spec.otel_name,
                    [_safe(self._hooks_first(counters[spec.key]))],
                    unit=spec.unit,
                    description=spec.description,
                )
            elif spec.kind is mc.InstrumentKind.GAUGE:
                inst = m.create_observable_gauge(
                    spec.otel_name,
                    [_safe(self._hooks_first(gauges[spec.key]))],
                    unit=spec.unit,
                    description=spec.description,
                )
            else:
                inst = m.create_histogram(
                    spec.otel_name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets or BOUNDS),
                )
            self._instruments[spec.key] = inst

    # -- collection hooks ---------------------------------------------------------------------------
    def add_collection_hook(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Run ``hook()`` once at the start of every collection of this provider; returns a remover.

        Hooks run in the SDK's callback phase, before it aggregates what readers get, so values a
        hook records into synchronous instruments are part of the same collection. A bound method
        is held weakly (its object may be garbage-collected without removing the hook).
        """
        ref: Callable[[], Callable[[], object] | None]
        if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
            ref = weakref.WeakMethod(hook)  # type: ignore[arg-type]
        else:

            def ref() -> Callable[[], object]:
                return hook

        with self._lock:
            self._hooks.append(ref)
        # Not under self._lock: the SDK holds its own lock while running callbacks (which take
        # self._lock) and takes it again to register an instrument.
        with self._trigger_lock:
            if not self._hooked:
                # Every otel-trading metric is disabled, so no callback would run the hooks: add
                # one that only does that. It never observes anything, so it exports nothing.
                self.meter.create_observable_gauge(
                    "otel_trading.collection_hooks", [_safe(self._hooks_first(_observe_nothing))]
                )

        def remove() -> None:
            with self._lock:
                if ref in self._hooks:
                    self._hooks.remove(ref)

        return remove

    def _hooks_first(
        self, callback: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """Only the first observable instrument created runs the hooks: the SDK calls every
        observable callback on every collection, in creation order, so that is once per collection."""
        if self._hooked:
            return callback
        self._hooked = True

        def run(options: CallbackOptions) -> Iterable[Observation]:
            if self._hooks:
                self._run_hooks()
            return callback(options)

        run.__name__ = getattr(callback, "__name__", "callback")
        return run

    def _run_hooks(self) -> None:
        with self._lock:
            refs = list(self._hooks)
        for ref in refs:
            hook = ref()
            if hook is None:
                with self._lock:
                    if ref in self._hooks:
                        self._hooks.remove(ref)
                continue
            try:
                hook()
            except Exception:
                _logger.exception("otel-trading: collection hook %r failed", hook)

    def has_sdk_provider(self) -> bool:
        return self._explicit_provider is not None or global_provider_is_set()

    # -- series -----------------------------------------------------------------------------------
    def breaker(self, name: str) -> HistogramSeries:
        return self._series(self.breaker_series, self.breaker_fold, mc.BREAKER_LATENCY.key, "name", name)

    def event(self, event_type: str) -> HistogramSeries:
        return self._series(
            self.event_series, self.event_fold, mc.BUS_PROCESSING_DURATION.key, "event_type", event_type
        )

    def _series(
        self, table: dict[str, HistogramSeries], fold: _LabelFold, hist_key: str, label: str, value: str
    ) -> HistogramSeries:
        series = table.get(value)
        if series is not None:
            return series
        with self._lock:
            value = fold.fold(value, table)
            series = table.get(value)
            if series is None:
                series = HistogramSeries(self, self._instruments.get(hist_key), {label: value})
                table[value] = series
            return series

    @property
    def folded_label_values(self) -> int:
        return self.breaker_fold.folded + self.event_fold.folded

    # -- callbacks (run by the SDK on collection, never on the hot path) ---------------------------
    @staticmethod
    def _column(
        table: dict[str, HistogramSeries], col: int
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            for series in list(table.values()):
                yield Observation(series.total_row()[col], series.attributes)

        return callback

    def _folded(self, options: CallbackOptions) -> Iterator[Observation]:
        # Both labels always, at 0 before any fold, so an increase() alert sees the first one.
        for fold in (self.breaker_fold, self.event_fold):
            yield Observation(fold.folded, {"label": fold.label})

    def _transitions(self, options: CallbackOptions) -> Iterator[Observation]:
        for series in list(self.breaker_series.values()):
            for (frm, to), n in list(series.transitions.items()):
                yield Observation(n, {**series.attributes, "from_state": frm, "to_state": to})

    def _breaker_states(self, options: CallbackOptions) -> Iterator[Observation]:
        for series in list(self.breaker_series.values()):
            # A component whose guarded object is gone reports None (e.g. an instrumentation
            # binding of a collected pybreaker breaker) and no longer counts.
            states = [int(state) for b in list(series.components) if (state := b.state) is not None]
            if states:
                # Several live breakers sharing a name report the worst state.
                yield Observation(max(states), series.attributes)

    def _queue_sizes(self, options: CallbackOptions) -> Iterator[Observation]:
        sizes: dict[str, int] = {}
        for bus in list(self.buses):
            sizes[bus.name] = sizes.get(bus.name, 0) + bus.queue_size
        for name, size in sizes.items():
            yield Observation(size, {"bus": name})

    def _subscribers(self, options: CallbackOptions) -> Iterator[Observation]:
        counts: dict[str, int] = {}
        for bus in list(self.buses):
            for type_name, n in bus.subscriber_counts().items():
                if type_name in self.event_series:
                    label = type_name
                elif self.event_fold.full(self.event_series):
                    # Folded (and counted) when subscribed; a collection must not count it again.
                    label = mc.OVERFLOW_LABEL_VALUE
                else:
                    label = self.event(type_name).attributes["event_type"]
                counts[label] = counts.get(label, 0) + n
        for label, n in counts.items():
            yield Observation(n, {"event_type": label})


def _observe_nothing(options: CallbackOptions) -> Iterable[Observation]:
    return ()


def _safe(
    callback: Callable[[CallbackOptions], Iterable[Observation]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A bug in a callback must cost one collection's data, not the reader."""

    def guarded(options: CallbackOptions) -> list[Observation]:
        try:
            return list(callback(options))
        except Exception:
            _logger.exception("otel-trading: metric callback failed; this collection skips it")
            return []

    guarded.__name__ = getattr(callback, "__name__", "callback")
    return guarded


def global_provider_is_set() -> bool:
    """Whether a real global MeterProvider is installed (not the API's placeholder proxy)."""
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return not isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider)


_registries: weakref.WeakKeyDictionary[Any, MetricsRegistry] = weakref.WeakKeyDictionary()
_global_registry: MetricsRegistry | None = None
_registries_lock = threading.Lock()


def registry_for(meter_provider: MeterProvider | None) -> MetricsRegistry:
    """The registry of ``meter_provider``; ``None`` means the global provider (set now or later)."""
    global _global_registry
    with _registries_lock:
        if meter_provider is None:
            if _global_registry is None:
                _global_registry = MetricsRegistry(None)
            return _global_registry
        reg = _registries.get(meter_provider)
        if reg is None:
            reg = MetricsRegistry(meter_provider)
            _registries[meter_provider] = reg
        return reg


def reset_global_registry() -> None:
    """Forget the registry bound to the global provider (for tests that reset OTel globals)."""
    global _global_registry
    with _registries_lock:
        _global_registry = None
