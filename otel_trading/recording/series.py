"""Series: one label set of one component kind, its row sources, and where its durations go."""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable
from math import floor, log
from typing import Any

from otel_trading import metric_contract as mc
from otel_trading.recording.exemplars import current_context, offer_of
from otel_trading.recording.exponential import (
    E_COUNTS,
    E_HI,
    E_LO,
    E_SUM,
    E_ZERO,
    MIN_NORMAL,
    Epoch,
    ExponentialBuckets,
    as_buckets,
    epoch_add,
    epoch_taken,
    late_in,
    new_epoch,
)
from otel_trading.recording.fast_rows import record_exponential as _record_exponential
from otel_trading.recording.rows import (
    B0,
    BOUNDS,
    EPOCH,
    MAX,
    MIN,
    SUM,
    Row,
    RowSource,
    add_row,
    count_of,
    fork_safe,
    harvest,
    implied_column,
    new_row,
    observe,
)
from otel_trading.settings import OTEL_TRADING_MAX_LABEL_VALUES

__all__ = ["MAX_PENDING_VALUES", "Binding", "LabelFold", "Series"]

_logger = logging.getLogger("otel_trading.recording")

#: How long a collection keeps checking a row's taken exponential buckets for writes that finish late.
LATE_WRITE_WINDOW_NS = 2_000_000_000

#: Durations a series keeps while no MeterProvider is known (see ``Binding.PENDING``).
MAX_PENDING_VALUES = 100_000


class Binding(enum.Enum):
    """How a series' durations reach the SDK. Every series has exactly one, set by its registry."""

    #: No provider yet (the global one is not set): durations go to the rows and to a bounded list,
    #: so either of the two bindings below can take them over exactly.
    PENDING = "pending"
    #: The rows are the histogram: the registry serves it to every reader at collection.
    ROWS = "rows"
    #: Each duration is recorded through the SDK histogram (a provider or an SDK version the rows
    #: cannot be served to): correct, and as slow as plain OTel.
    DIRECT = "direct"


class Series:
    """What every component sharing one label value feeds, and what collection reads.

    Hot paths test ``fast`` (True when bound to ``Binding.ROWS`` and no reader takes exponential
    buckets) and write their row inline; otherwise they call ``observe_slow``. Counters always come
    from the rows, whatever the binding. ``bounds`` are the histogram's bucket boundaries: every row
    of the series is made for them. ``exponential`` is (max_scale, max_size) of the exponential
    buckets the series also keeps when a reader takes them, else None.
    """

    # ``fast`` is a slot: the compiled hot paths read it at its offset (checked when they are made).
    __slots__ = ("__dict__", "__weakref__", "fast")

    def __init__(
        self,
        attributes: dict[str, str],
        histogram: Any,
        binding: Binding,
        bounds: tuple[float, ...] = BOUNDS,
        exponential: tuple[int, int] | None = None,
    ) -> None:
        self.attributes = attributes
        self.bounds = bounds
        # The compiled update places durations by the layout's bounds: only for series that use them.
        self._layout_bounds = bounds == BOUNDS
        self.start_ns = time.time_ns()
        # Weak: a component keeps its series, and a strong reference to the SDK instrument would keep
        # the provider's whole measurement state (and, through its callbacks, the registry) alive
        # after the provider is shut down and dropped. The registry's meter holds the instrument.
        self._histogram = _weak_instrument(histogram)
        self.binding = binding
        self.exponential = exponential if binding is Binding.ROWS else None
        # Row epochs taken at the previous collection, checked for late writes at the next one.
        # (epoch, what it held when taken or last checked, when to stop checking it)
        self._taken: list[tuple[Epoch, tuple[int, float, dict[int, int]], int]] = []
        # The exponential buckets of the latest collection (see exponential_epoch()).
        self._epoch: ExponentialBuckets | None = None
        #: The registry whose readers' reservoirs take this series' exemplars, held weakly (as the histogram:
        #: a component must not keep its provider's registry alive); None: no exemplars.
        self.exemplars: Callable[[], Any] | None = None
        self._exemplar_kind = ""
        #: True under the ``always_on`` exemplar filter: every duration is offered, off the inline path.
        self.always_offer = False
        self.fast = binding is Binding.ROWS and self.exponential is None
        self._lock = threading.Lock()
        self._sources: dict[int, RowSource] = {}
        self._retired = new_row(bounds)
        # Sources of garbage-collected components, folded into _retired at the next collection.
        self._retiring: list[RowSource] = []
        self.components: weakref.WeakSet[Any] = weakref.WeakSet()
        self._owned: weakref.WeakKeyDictionary[Any, RowSource] = weakref.WeakKeyDictionary()
        self.transitions: dict[tuple[str, str], int] = {}
        self._pending: list[float] = []
        self._pending_dropped = 0
        # Extremes over every collection so far (cumulative readers report these).
        self.all_min = math.inf
        self.all_max = -math.inf
        #: Set when the series of a registry adopted by another one merged into that one's series.
        self.merged_into: Series | None = None
        fork_safe(self)

    # -- sources --------------------------------------------------------------------------------------
    def attach(self, component: Any, source: RowSource) -> None:
        if self.merged_into is not None:
            self.merged_into.attach(component, source)
            return
        with self._lock:
            self._sources[id(source)] = source
            self.components.add(component)
        weakref.finalize(component, self._retire, source)

    def source_for(self, component: Any, make: Callable[[], RowSource]) -> RowSource:
        """The source ``component`` already feeds this series through, else a new attached one.

        Event classes sharing a label value (folded past the cardinality limit, or same-named)
        then share one row per component: memory and collection cost follow series, not classes.
        """
        if self.merged_into is not None:
            return self.merged_into.source_for(component, make)
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

    def count_transition(self, from_state: str, to_state: str) -> None:
        if self.merged_into is not None:
            self.merged_into.count_transition(from_state, to_state)
            return
        key = (from_state, to_state)
        with self._lock:
            self.transitions[key] = self.transitions.get(key, 0) + 1

    # -- collection -----------------------------------------------------------------------------------
    def snapshot(self) -> Row:
        """Every source added up, once per collection; its MIN/MAX are this collection's epoch.

        When exponential buckets are kept, each row's are taken too (see ``exponential_epoch()``).
        """
        total = new_row(self.bounds)
        limits = self.exponential
        epoch = ExponentialBuckets(*limits) if limits is not None else None
        with self._lock:
            while self._retiring:
                source = self._retiring.pop()
                if self._sources.pop(id(source), None) is not None:
                    implied = implied_column(source)
                    for row in source.rows():
                        add_row(self._retired, row)
                        if implied is not None:
                            self._retired[implied] += count_of(row)
            harvest(total, self._retired)
            sources = list(self._sources.values())
            taken, self._taken = self._taken, []
            self._take_epoch(self._retired, epoch)
        for source in sources:
            implied = implied_column(source)
            for row in source.rows():
                harvest(total, row)
                if implied is not None:
                    total[implied] += count_of(row)
                if row[EPOCH] is not None:
                    with self._lock:
                        self._take_epoch(row, epoch)
        if epoch is not None:
            # Writers that read an epoch just before a collection took it finish their update in it:
            # counted at the next collection. Checked for LATE_WRITE_WINDOW_NS after the take (a writer
            # is in the middle of one update; only a thread stalled for longer would be missed).
            now = time.monotonic_ns()
            keep = []
            for e, copy, until in taken:
                late = late_in(e, copy)
                if late is not None:
                    epoch.merge(late, *limits)  # type: ignore[misc]
                    copy = epoch_taken(e)
                if now < until:
                    keep.append((e, copy, until))
            with self._lock:
                self._taken.extend(keep)
            epoch.min, epoch.max = total[MIN], total[MAX]
        self._epoch = epoch
        if total[MIN] < self.all_min:
            self.all_min = total[MIN]
        if total[MAX] > self.all_max:
            self.all_max = total[MAX]
        return total

    def _take_epoch(self, row: Row, into: ExponentialBuckets | None) -> None:
        # With the lock held: writers only rescale or start an epoch under it.
        e = row[EPOCH]
        if e is None:
            return
        row[EPOCH] = None
        copy = epoch_taken(e)
        self._taken.append((e, copy, time.monotonic_ns() + LATE_WRITE_WINDOW_NS))
        if into is not None:
            into.merge(as_buckets(e, copy), *self.exponential)  # type: ignore[misc]

    def exponential_epoch(self) -> ExponentialBuckets | None:
        """The exponential buckets of the values the latest ``snapshot()`` took, or None when not kept."""
        epoch, self._epoch = self._epoch, None
        return epoch

    # -- durations off the fast path -------------------------------------------------------------------
    def observe(self, row: Row, value: float) -> None:
        """A duration, wherever the binding sends it. Hot paths inline the ``fast`` branch instead."""
        if self.fast:
            observe(row, value, self.bounds)
            if current_context():
                self.offer_exemplar(value)
        else:
            self.observe_slow(row, value)

    def observe_slow(self, row: Row, value: float) -> bool:
        """A duration while not bound to the rows; True when it went into ``row``'s histogram."""
        if self.exponential is not None:
            if _record_exponential is not None and self._layout_bounds:
                # Compiled: the row, the epoch where no rescale is needed, and the context check in one call.
                flags = _record_exponential(row, value)
                if flags is not None:
                    if flags & 2:
                        self._epoch_add(row, value)
                    if flags & 1 or self.always_offer:
                        self.offer_exemplar(value)
                    return True
            # Bound to the rows, exponential buckets kept too: ``observe()`` inlined, as hot paths do.
            row[SUM] += value
            if value < row[MIN]:
                row[MIN] = value
            if value > row[MAX]:
                row[MAX] = value
            bounds = self.bounds
            row[B0 if value <= bounds[0] else B0 + bisect_left(bounds, value)] += 1
            # The row's epoch has one writer, this thread: no lock unless it must grow or rescale.
            e = row[EPOCH]
            if e is not None:
                if value > MIN_NORMAL:
                    x = log(value) * e[0]
                    i = floor(x)
                    # Not near a boundary (where a power of two needs the exact rule), inside the range.
                    if x - i >= 1e-6 and e[E_LO] <= i <= e[E_HI]:
                        e[E_SUM] += value
                        counts = e[E_COUNTS]
                        try:
                            counts[i] += 1
                        except KeyError:
                            counts[i] = 1
                        if self.always_offer or current_context():
                            self.offer_exemplar(value)
                        return True
                elif value == 0.0:
                    e[E_ZERO] += 1
                    if self.always_offer or current_context():
                        self.offer_exemplar(value)
                    return True
            self._epoch_add(row, value)
            if self.always_offer or current_context():
                self.offer_exemplar(value)
            return True
        if self.merged_into is not None:
            return self.merged_into.observe_slow(row, value)
        if self.binding is Binding.PENDING:
            with self._lock:
                if self.binding is Binding.PENDING:
                    observe(row, value, self.bounds)
                    if len(self._pending) < MAX_PENDING_VALUES:
                        self._pending.append(value)
                    else:
                        self._pending_dropped += 1
                    return True
        if self.binding is Binding.DIRECT:
            self._record(value)
            return False
        observe(row, value, self.bounds)
        if self.always_offer or current_context():
            self.offer_exemplar(value)
        return True

    def _epoch_add(self, row: Row, value: float) -> None:
        # What needs the lock: a fresh epoch, a rescale, the exact rule near a power of two.
        with self._lock:
            limits = self.exponential
            if limits is not None:
                e = row[EPOCH]
                if e is None:
                    e = row[EPOCH] = new_epoch(*limits)
                epoch_add(e, value)

    def offer_exemplar(self, value: float) -> None:
        """``value`` was recorded in a non-empty OpenTelemetry context (or ``always_on``): an exemplar candidate.

        Hot paths call it after their row update when ``current_context()`` is not empty.
        """
        ref = self.exemplars
        if ref is None:
            if self.merged_into is not None:
                self.merged_into.offer_exemplar(value)
            return
        try:
            offer = offer_of(value, self.always_offer, current_context())
            if offer is not None:
                registry = ref()
                if registry is not None:
                    registry.offer_exemplar(self._exemplar_kind, self, offer)
        except Exception:  # never into the bot
            _report_exemplar_failure()

    def set_exemplars(self, registry: Any, kind: str = "", always: bool = False) -> None:
        """Offer exemplar candidates to ``registry``'s streams of ``kind`` (None: no exemplars); ``always``:
        every duration (the ``always_on`` filter), else those recorded in a sampled span (``trace_based``)."""
        with self._lock:
            keep = registry is not None and self.binding is Binding.ROWS
            self.exemplars = weakref.ref(registry) if keep else None
            self._exemplar_kind = kind
            self.always_offer = always and self.exemplars is not None
            self.fast = self.binding is Binding.ROWS and self.exponential is None and not self.always_offer

    def _record(self, value: float) -> None:
        histogram = self._histogram()
        if histogram is None:
            return  # its provider is gone: nothing could read the value
        try:
            histogram.record(value, self.attributes)
        except Exception:  # pragma: no cover - the SDK swallows its own errors
            _logger.exception("otel-trading: recording %s failed", self.attributes)

    def bind(self, binding: Binding, histogram: Any, exponential: tuple[int, int] | None = None) -> None:
        """Leave PENDING (or switch instrument); values kept while pending go where ``binding`` says.

        ``exponential``: see the class docstring; the pending values go into those buckets too.
        """
        with self._lock:
            self._histogram = _weak_instrument(histogram)
            self.binding = binding
            pending, self._pending = self._pending, []
            dropped, self._pending_dropped = self._pending_dropped, 0
            self._keep_exponential(exponential if binding is Binding.ROWS else None)
            self._replay_into_epoch(pending)
        if binding is Binding.DIRECT:
            for value in pending:
                self._record(value)
        if dropped and (binding is Binding.DIRECT or self.exponential is not None):
            _logger.warning(
                "otel-trading: %d durations of %s recorded before a MeterProvider was set exceeded the "
                "%d kept for it and are missing from its histogram (counters are exact)",
                dropped,
                self.attributes,
                MAX_PENDING_VALUES,
            )

    def _replay_into_epoch(self, pending: list[float]) -> None:
        # With the lock held: durations kept while no provider was known, into the exponential buckets.
        if self.exponential is not None and pending:
            e = self._retired[EPOCH]
            if e is None:
                e = self._retired[EPOCH] = new_epoch(*self.exponential)
            for value in pending:
                epoch_add(e, value)

    def keep_exponential(self, exponential: tuple[int, int] | None) -> None:
        """Start (or stop) keeping exponential buckets: a reader taking them appeared (or none is left)."""
        with self._lock:
            self._keep_exponential(exponential if self.binding is Binding.ROWS else None)

    def _keep_exponential(self, exponential: tuple[int, int] | None) -> None:
        # Called with the lock held.
        self.exponential = exponential
        self.fast = self.binding is Binding.ROWS and self.exponential is None and not self.always_offer

    def absorb(self, other: Series) -> None:
        """Take over ``other``'s sources, history and pending values; ``other`` forwards here from now on."""
        with other._lock:
            sources = dict(other._sources)
            retired, other._retired = other._retired, new_row(other.bounds)
            retiring, other._retiring = list(other._retiring), []
            transitions, other.transitions = dict(other.transitions), {}
            pending, other._pending = other._pending, []
            components = list(other.components)
            owned = dict(other._owned.items())
            taken, other._taken = other._taken, []
            other.exponential = None
            other.exemplars, other.always_offer = None, False
            other.merged_into = self
            other.binding, other.fast = self.binding, self.fast
        with self._lock:
            self._sources.update(sources)
            self._retiring.extend(retiring)
            add_row(self._retired, retired)
            for key, n in transitions.items():
                self.transitions[key] = self.transitions.get(key, 0) + n
            for component in components:
                self.components.add(component)
            for component, source in owned.items():
                self._owned.setdefault(component, source)
            if self.binding is Binding.PENDING:
                self._pending.extend(pending)
            self._taken.extend(taken)
            self._replay_into_epoch(pending)
        if self.binding is Binding.DIRECT:
            for value in pending:
                self._record(value)


def _weak_instrument(instrument: Any) -> Callable[[], Any]:
    if instrument is None:
        return lambda: None
    try:
        return weakref.ref(instrument)
    except TypeError:  # an instrument type without weakref support: hold it
        return lambda: instrument


_exemplar_failed = False


def _report_exemplar_failure() -> None:
    global _exemplar_failed
    if not _exemplar_failed:
        _exemplar_failed = True
        _logger.exception("otel-trading: recording an exemplar failed; exemplars may be missing (logged once)")


class LabelFold:
    """Bounds the distinct values of one data-derived label; extra values share one series."""

    def __init__(self, label: str, limit: int) -> None:
        self.label = label
        self.limit = limit
        self.folded = 0
        self._warned = False

    def full(self, known: dict[str, Any]) -> bool:
        return len(known) >= self.limit

    def fold(self, value: str, known: dict[str, Any]) -> str:
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
