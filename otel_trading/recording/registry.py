"""MetricsRegistry: every otel-trading instrument of one MeterProvider, and the series they report.

There is one registry per provider, however a component names it: ``meter_provider=None`` means
the global provider, and once that is set it is the same registry as passing it explicitly. A
registry made before the global provider was set (the API's proxy) binds to it at its first
collection, or is adopted by the registry already serving that provider.

Each collection of a reader goes: the registry's first callback binds and installs what is needed,
runs the collection hooks, and adds up every series once; the counter callbacks and the
histogram streams all report from that one snapshot, so counters and histograms agree.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_trading import metric_contract as mc
from otel_trading.recording import exemplars, sdk_binding
from otel_trading.recording.rows import B0, MAX, MIN, SUM, Row, count_of, fork_safe
from otel_trading.recording.sdk_binding import HistogramTotals, RowsExponentialStream, RowsHistogramStream
from otel_trading.recording.series import Binding, LabelFold, Series
from otel_trading.settings import disabled_metrics_from_env, max_label_values_from_env
from otel_trading.version import __version__

__all__ = ["MetricsRegistry", "global_provider_is_set", "registry_for", "reset_global_registry"]

_logger = logging.getLogger("otel_trading.recording")

_BREAKER, _EVENT, _LOOP = "breaker", "event", "loop"
_HISTOGRAM_OF = {_BREAKER: mc.BREAKER_LATENCY.key, _EVENT: mc.BUS_PROCESSING_DURATION.key, _LOOP: mc.LOOP_LAG.key}
#: The bucket boundaries of each kind's histogram: its rows are made for them.
_BOUNDS_OF: dict[str, tuple[float, ...]] = {
    kind: mc.METRICS_BY_KEY[key].buckets or mc.DURATION_BUCKETS for kind, key in _HISTOGRAM_OF.items()
}
_COLLECTION_INSTRUMENT = "otel_trading.collection"


class MetricsRegistry:
    """Every otel-trading instrument of one meter provider, and the series they report."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        # Weak: the provider holds this registry (through our callbacks), never the reverse, so a
        # provider the application drops is freed.
        self._provider: Callable[[], Any] | None = _weak(meter_provider) if meter_provider is not None else None
        self.meter = otel_metrics.get_meter(mc.SCOPE_NAME, __version__, meter_provider, schema_url=mc.SCHEMA_URL)
        self.disabled = disabled_metrics_from_env()
        max_values = max_label_values_from_env()
        self._lock = threading.Lock()
        fork_safe(self)
        self.breaker_series: dict[str, Series] = {}
        self.event_series: dict[str, Series] = {}
        #: Event-loop lag, by ``loop`` label (written by otel_trading.loop_monitor on each loop).
        self.loop_series: dict[str, Series] = {}
        self.breaker_fold = LabelFold("name", max_values)
        self.event_fold = LabelFold("event_type", max_values)
        self.bus_fold = LabelFold("bus", max_values)
        self.loop_fold = LabelFold("loop", max_values)
        self._bus_names: dict[str, None] = {}
        # bus -> (the name it was labelled under, its label): a name read at collection that
        # differs (an instrumented bus whose name attribute is set after construction) is re-folded.
        self._bus_labels: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()
        self.buses: weakref.WeakSet[Any] = weakref.WeakSet()
        self._instruments: dict[str, Any] = {}
        # Collection hooks (e.g. batching's flush), held weakly; see add_collection_hook().
        self._hooks: list[Callable[[], Callable[[], object] | None]] = []
        # Each kind's streams (one per reader), held weakly, in reader order: an exemplar candidate is
        # offered to them in that order, as the SDK offers a measurement to its readers' aggregations.
        self._streams: dict[str, list[weakref.ref[RowsHistogramStream | RowsExponentialStream]]] = {
            kind: [] for kind in _HISTOGRAM_OF
        }
        self._snapshot: dict[str, list[tuple[Series, Row]]] = {kind: [] for kind in _HISTOGRAM_OF}
        self._histograms: dict[str, Any] = {}
        # (max_scale, max_size) of the exponential buckets each kind's series keep, where a reader takes them.
        self._exponential: dict[str, tuple[int, int] | None] = {}
        # The provider's exemplar filter (recording.exemplars).
        self._exemplar_filter: str | None = None
        #: The registry that took this one over (see the module docstring), else None.
        self.adopted_by: MetricsRegistry | None = None
        self._create_instruments()
        self.binding = Binding.PENDING
        if meter_provider is not None:
            self.binding, self._histograms, self._exponential = self._binding_for(meter_provider)
            self._exemplar_filter = exemplars.filter_mode(meter_provider)
            if self.binding is Binding.ROWS:
                # Now, not at the first collection: exemplars offered before it need every reader's stream.
                self._install_streams()

    def _tables(self) -> dict[str, dict[str, Series]]:
        """Every kind's series table, by kind."""
        return {_BREAKER: self.breaker_series, _EVENT: self.event_series, _LOOP: self.loop_series}

    @property
    def provider(self) -> Any:
        """The provider this registry reports to; None while it waits for the global one."""
        return self._provider() if self._provider is not None else None

    # -- instruments ----------------------------------------------------------------------------------
    def enabled(self, key: str) -> bool:
        return key not in self.disabled

    def group_enabled(self, group: mc.MetricGroup) -> bool:
        """False when every metric of ``group`` is disabled: its components then skip all recording."""
        return any(m.key not in self.disabled for m in mc.METRICS if m.group is group)

    def _create_instruments(self) -> None:
        m = self.meter
        # First, so that the SDK runs its callback before any other of ours on every collection.
        m.create_observable_gauge(_COLLECTION_INSTRUMENT, [self._on_collect])
        counters: dict[str, Callable[[CallbackOptions], Iterable[Observation]]] = {
            mc.BREAKER_SUCCESSES.key: self._column(_BREAKER, 0),
            mc.BREAKER_FAILURES.key: self._column(_BREAKER, 1),
            mc.BREAKER_REJECTED.key: self._column(_BREAKER, 2),
            mc.BREAKER_TRANSITIONS.key: self._transitions,
            mc.BUS_PUBLISHED.key: self._column(_EVENT, 0),
            mc.BUS_PROCESSED.key: self._column(_EVENT, 1),
            mc.BUS_HANDLER_ERRORS.key: self._column(_EVENT, 2),
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
            inst: Any
            if spec.kind is mc.InstrumentKind.COUNTER:
                inst = m.create_observable_counter(
                    spec.otel_name, [_safe(counters[spec.key])], unit=spec.unit, description=spec.description
                )
            elif spec.kind is mc.InstrumentKind.GAUGE:
                inst = m.create_observable_gauge(
                    spec.otel_name, [_safe(gauges[spec.key])], unit=spec.unit, description=spec.description
                )
            else:
                inst = _create_histogram(m, spec)
            self._instruments[spec.key] = inst

    def _binding_for(self, provider: Any) -> tuple[Binding, dict[str, Any], dict[str, tuple[int, int] | None]]:
        """How this registry's histograms reach ``provider``, its real histogram instruments, and the
        exponential buckets each kind's rows must keep for it."""
        kinds = {kind: key for kind, key in _HISTOGRAM_OF.items() if key in self._instruments}
        if not kinds:
            return Binding.ROWS, {}, {}
        if not _is_proxy_meter(self.meter):
            real = {kind: self._instruments[key] for kind, key in kinds.items()}
        else:
            meter = provider.get_meter(mc.SCOPE_NAME, __version__, schema_url=mc.SCHEMA_URL)
            real = {kind: _create_histogram(meter, mc.METRICS_BY_KEY[key]) for kind, key in kinds.items()}
        if not sdk_binding.can_serve(provider):
            return Binding.DIRECT, real, {}
        if exemplars.filter_mode(provider) is None:
            _logger.warning(
                "otel-trading: the provider's exemplar filter %s is not one of the SDK's three, so otel-trading's "
                "durations are recorded through the SDK histogram (correct, but as slow as plain OpenTelemetry)",
                type(provider._sdk_config.exemplar_filter).__name__,
            )
            return Binding.DIRECT, real, {}
        for kind, instrument in real.items():
            reason = sdk_binding.incompatibility(provider, instrument, _BOUNDS_OF[kind])
            if reason is not None:
                _logger.warning(
                    "otel-trading: %s, so otel-trading's durations are recorded through the SDK histogram "
                    "(correct, but as slow as plain OpenTelemetry)",
                    reason,
                )
                return Binding.DIRECT, real, {}
        exponential = {kind: sdk_binding.exponential_limits(provider, instrument) for kind, instrument in real.items()}
        return Binding.ROWS, real, exponential

    # -- collection -------------------------------------------------------------------------------------
    def _on_collect(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            self._bind_if_pending()
            self._adopt_pending_global()
            if self.binding is Binding.ROWS:
                self._install_streams()
            self._run_hooks()
            self._take_snapshot()
        except Exception:
            _logger.exception("otel-trading: preparing a collection failed; this collection may miss values")
        return ()

    def _bind_if_pending(self) -> None:
        if self._provider is not None:
            return
        provider = otel_metrics.get_meter_provider()
        if _is_proxy_provider(provider):
            return
        global _pending_global
        with _registries_lock:
            existing = _registries_get(provider)
            if existing is not None and existing is not self:
                return  # that registry adopts this one at its own collection
            _registries_set(provider, self)
            if _pending_global is self:
                _pending_global = None
        self._bind_to(provider)

    def _bind_to(self, provider: Any) -> None:
        binding, histograms, exponential = self._binding_for(provider)
        with self._lock:
            self._provider = _weak(provider)
            self._histograms = histograms
            self._exponential = exponential
            self._exemplar_filter = exemplars.filter_mode(provider)
            self.binding = binding
            tables = {kind: list(table.values()) for kind, table in self._tables().items()}
        if binding is Binding.ROWS:
            self._install_streams()
        for kind, series_list in tables.items():
            for series in series_list:
                series.bind(binding, histograms.get(kind), exponential.get(kind))
                self._set_exemplars(kind, series)

    def _set_exemplars(self, kind: str, series: Series) -> None:
        # The loop monitor's lag is measured in its own timer callback: no span of the bot's is current.
        mode = self._exemplar_filter
        if kind == _LOOP or mode is None or mode == exemplars.ALWAYS_OFF:
            series.set_exemplars(None)
        else:
            series.set_exemplars(self, kind, mode == exemplars.ALWAYS_ON)

    def offer_exemplar(self, kind: str, series: Series, offer: exemplars.Offer) -> None:
        """An exemplar candidate of ``series``, offered to every reader's stream for ``kind`` in reader order
        (the order the SDK offers a measurement to its readers' aggregations)."""
        for ref in self._streams[kind]:
            stream = ref()
            if stream is not None:
                stream.offer(series, offer)

    def _adopt_pending_global(self) -> None:
        pending = _pending_global
        if pending is None or pending is self or pending._provider is not None:
            return
        provider = self.provider
        if provider is None or otel_metrics.get_meter_provider() is not provider:
            return
        self.adopt(pending)

    def adopt(self, other: MetricsRegistry) -> None:
        """Take over a registry made for the global provider before it was set, which is ours."""
        global _pending_global
        with _registries_lock:
            if _pending_global is other:
                _pending_global = None
        with other._lock:
            other.adopted_by = self
            other._provider = self._provider
            moved = {kind: dict(table) for kind, table in other._tables().items()}
            buses = list(other.buses)
            hooks = list(other._hooks)
            other.buses = self.buses
        own_tables = self._tables()
        for kind, table in moved.items():
            own = own_tables[kind]
            for label, series in table.items():
                with self._lock:
                    target = own.get(label)
                    if target is None:
                        own[label] = series
                if target is None:
                    series.bind(self.binding, self._histograms.get(kind), self._exponential.get(kind))
                    self._set_exemplars(kind, series)
                else:
                    target.absorb(series)
        for bus in buses:
            self.add_bus(bus)
        with self._lock:
            self._hooks.extend(hooks)
        self.breaker_fold.folded += other.breaker_fold.folded
        self.event_fold.folded += other.event_fold.folded
        self.bus_fold.folded += other.bus_fold.folded
        self.loop_fold.folded += other.loop_fold.folded

    def _install_streams(self) -> None:
        provider = self.provider
        if provider is None:
            return
        for kind, instrument in self._histograms.items():
            new = sdk_binding.install(provider, instrument, _BOUNDS_OF[kind])
            if new:
                self._streams[kind] = [weakref.ref(s) for s in self._live_streams(kind)] + [weakref.ref(s) for s in new]
            if any(isinstance(stream, RowsExponentialStream) for stream in new):
                limits = sdk_binding.exponential_limits(provider, instrument)
                if limits != self._exponential.get(kind):
                    self._keep_exponential(kind, limits)

    def _live_streams(self, kind: str) -> list[RowsHistogramStream | RowsExponentialStream]:
        """``kind``'s streams whose readers are still there, in reader order."""
        return [stream for stream in (ref() for ref in self._streams[kind]) if stream is not None]

    def _keep_exponential(self, kind: str, limits: tuple[int, int] | None) -> None:
        # A reader added at run time takes exponential buckets: the rows keep them from now on.
        if self._exponential.get(kind) is None:
            _logger.warning(
                "otel-trading: a reader added after the first collection takes exponential histograms of %s; "
                "its first point misses the durations recorded between its addition and this collection",
                _HISTOGRAM_OF[kind],
            )
        with self._lock:
            self._exponential[kind] = limits
            series_list = list(self._tables()[kind].values())
        for series in series_list:
            series.keep_exponential(limits)

    def _take_snapshot(self) -> None:
        for kind, table in self._tables().items():
            snapshot = [(series, series.snapshot()) for series in list(table.values())]
            epochs = [series.exponential_epoch() for series, _ in snapshot]
            self._snapshot[kind] = snapshot
            streams = self._live_streams(kind)
            if streams:
                totals = [
                    HistogramTotals(
                        series,
                        series.attributes,
                        count_of(row),
                        row[SUM],
                        tuple(row[B0:]),
                        row[MIN],
                        row[MAX],
                        series.all_min,
                        series.all_max,
                        series.start_ns,
                        epoch,
                    )
                    for (series, row), epoch in zip(snapshot, epochs, strict=True)
                ]
                for stream in streams:
                    stream.note(totals)

    # -- collection hooks -------------------------------------------------------------------------------
    def add_collection_hook(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Run ``hook()`` once at the start of every collection of this provider; returns a remover.

        Hooks run in the SDK's callback phase, before it aggregates what readers get, so values a
        hook records into synchronous instruments are part of the same collection. A bound method
        is held weakly (its object may be garbage-collected without removing the hook).
        """
        if self.adopted_by is not None:
            return self.adopted_by.add_collection_hook(hook)
        ref: Callable[[], Callable[[], object] | None]
        if hasattr(hook, "__self__") and hasattr(hook, "__func__"):
            ref = weakref.WeakMethod(hook)
        else:

            def ref() -> Callable[[], object]:
                return hook

        with self._lock:
            self._hooks.append(ref)

        def remove() -> None:
            owner = self.adopted_by or self
            with owner._lock:
                if ref in owner._hooks:
                    owner._hooks.remove(ref)

        return remove

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

    # -- series -------------------------------------------------------------------------------------------
    def breaker(self, name: str) -> Series:
        if self.adopted_by is not None:
            return self.adopted_by.breaker(name)
        return self._series(_BREAKER, self.breaker_series, self.breaker_fold, "name", name)

    def event(self, event_type: str) -> Series:
        if self.adopted_by is not None:
            return self.adopted_by.event(event_type)
        return self._series(_EVENT, self.event_series, self.event_fold, "event_type", event_type)

    def loop(self, name: str) -> Series:
        """The event-loop lag series of the loop labelled ``name`` (a bounded label, like the others)."""
        if self.adopted_by is not None:
            return self.adopted_by.loop(name)
        return self._series(_LOOP, self.loop_series, self.loop_fold, "loop", name)

    def _series(self, kind: str, table: dict[str, Series], fold: LabelFold, label: str, value: str) -> Series:
        series = table.get(value)
        if series is not None:
            return series
        with self._lock:
            value = fold.fold(value, table)
            series = table.get(value)
            if series is None:
                series = Series(
                    {label: value},
                    self._histograms.get(kind),
                    self.binding,
                    _BOUNDS_OF[kind],
                    self._exponential.get(kind),
                )
                self._set_exemplars(kind, series)
                table[value] = series
            return series

    def add_bus(self, bus: Any) -> None:
        """Report ``bus`` in the queue-size and subscriber gauges; its ``name`` is a bounded label."""
        if self.adopted_by is not None:
            self.adopted_by.add_bus(bus)
            return
        self._label_bus(bus, str(bus.name))
        self.buses.add(bus)

    def _label_bus(self, bus: Any, name: str) -> str:
        # ``name`` is read by the caller, outside the lock: an instrumented bus's name property
        # runs instrumentation code.
        with self._lock:
            label = self.bus_fold.fold(name, self._bus_names)
            if label == name:
                self._bus_names[name] = None
            self._bus_labels[bus] = (name, label)
        return label

    # -- callbacks (run by the SDK on collection, never on the hot path) --------------------------------
    def _column(self, kind: str, col: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterator[Observation]:
            for series, row in self._snapshot[kind]:
                yield Observation(row[col], series.attributes)

        callback.__name__ = f"{kind}_column_{col}"
        return callback

    def _folded(self, options: CallbackOptions) -> Iterator[Observation]:
        # Every label always, at 0 before any fold, so an increase() alert sees the first one.
        for fold in (self.breaker_fold, self.event_fold, self.bus_fold, self.loop_fold):
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
            size = bus.queue_size
            if size is None:
                continue  # a bus with no queue (pyee's EventEmitter): subscribers only
            # Read at every collection: a bus may be named after it was registered.
            name = str(bus.name)
            known = self._bus_labels.get(bus)
            label = known[1] if known is not None and known[0] == name else self._label_bus(bus, name)
            sizes[label] = sizes.get(label, 0) + size
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


def _create_histogram(meter: Any, spec: mc.MetricSpec) -> Any:
    return meter.create_histogram(
        spec.otel_name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=list(spec.buckets or mc.DURATION_BUCKETS),
    )


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


def _is_proxy_provider(provider: Any) -> bool:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return isinstance(provider, _ProxyMeterProvider)


def _is_proxy_meter(meter: Any) -> bool:
    from opentelemetry.metrics._internal import _ProxyMeter

    return isinstance(meter, _ProxyMeter)


def global_provider_is_set() -> bool:
    """Whether a real global MeterProvider is installed (not the API's placeholder proxy)."""
    return not _is_proxy_provider(otel_metrics.get_meter_provider())


def _weak(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:  # a provider type without weakref support: hold it
        return lambda: obj


# Registries by provider, weakly: a registry never holds its provider, so entries go with providers.
_registries: weakref.WeakKeyDictionary[Any, MetricsRegistry] = weakref.WeakKeyDictionary()
_unweakable: dict[int, tuple[Any, MetricsRegistry]] = {}
# The registry for ``meter_provider=None`` made while no global provider was set.
_pending_global: MetricsRegistry | None = None
_registries_lock = threading.RLock()


def _registries_get(provider: Any) -> MetricsRegistry | None:
    try:
        return _registries.get(provider)
    except TypeError:
        entry = _unweakable.get(id(provider))
        return entry[1] if entry is not None and entry[0] is provider else None


def _registries_set(provider: Any, registry: MetricsRegistry) -> None:
    try:
        _registries[provider] = registry
    except TypeError:
        _unweakable[id(provider)] = (provider, registry)


def registry_for(meter_provider: MeterProvider | None) -> MetricsRegistry:
    """The registry of ``meter_provider``; ``None`` means the global provider (set now or later)."""
    global _pending_global
    with _registries_lock:
        provider: Any = meter_provider
        if provider is None:
            provider = otel_metrics.get_meter_provider()
            if _is_proxy_provider(provider):
                if _pending_global is None:
                    _pending_global = MetricsRegistry(None)
                return _pending_global
        registry = _registries_get(provider)
        if registry is not None:
            return registry.adopted_by or registry
        pending = _pending_global
        if pending is not None and otel_metrics.get_meter_provider() is provider:
            # The global provider was set since the pending registry was made: it is this one's.
            _pending_global = None
            _registries_set(provider, pending)
            pending._bind_to(provider)
            return pending
        registry = MetricsRegistry(provider)
        _registries_set(provider, registry)
        return registry


def reset_global_registry() -> None:
    """Forget the registry waiting for the global provider (for tests that reset OTel globals)."""
    global _pending_global
    with _registries_lock:
        _pending_global = None


def _renew_module_lock() -> None:
    # The module lock may have been held by another thread at fork(): the child gets a new one.
    global _registries_lock
    _registries_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_module_lock)
