"""``BatchedMetrics``: the monitoring guide's batching idea as a supported, thread-safe option.

For your own metrics on a hot path (a strategy's signal latency, fills per symbol): an OTel SDK
instrument costs 4-15 us per ``add``/``record`` in Python (11-13 us on the 2-core VM of
``bench/run.py``); a batched one appends to a bounded buffer (~0.25 us there) and the buffer is
flushed into the real instruments later::

    batched = BatchedMetrics(meter_provider=provider)            # or None: the global provider
    meter = provider.get_meter("my_bot")
    fills = batched.wrap(meter.create_counter("strategy.fills", unit="{fill}"))
    signal_latency = batched.wrap(meter.create_histogram("strategy.signal.latency", unit="s"))
    fills.add(1, {"symbol": "BTC-USD"})                          # hot path: no SDK call
    signal_latency.record(0.0003, {"symbol": "BTC-USD"})

When the buffer is flushed:

* on every collection of the provider (a Prometheus scrape, a periodic OTLP/console export),
  through the otel-trading registry's collection hook, which runs in the SDK's callback phase,
  before it aggregates: a reader always sees everything recorded before it collected (this holds
  with every otel-trading metric disabled too);
* on ``close()`` and at interpreter exit (``atexit``), so nothing buffered is lost at shutdown
  (a provider shut down at exit flushes through its final collection either way);
* on ``flush()``.

Never on the hot path. A full buffer drops the value and counts it (``dropped``, warned once)
instead of flushing inline or blocking: the caller's latency stays flat, and the loss is visible.
Size ``max_pending`` to at least the peak record rate times the collection interval.

What a flush costs: counters (``Counter``, ``UpDownCounter``) are summed per (instrument,
attributes) into one ``add``: N SDK calls become one (~0.4 us per buffered value in all).
Gauges keep the last value per attribute set. Histograms need one SDK ``record`` per value (the
API has no bulk record), so for them batching moves the cost off the hot path to the collecting
thread rather than removing it: above a few thousand values per second, sample them instead.

Attribute mappings are read at flush time: do not mutate one after passing it (module-level
constants are the usual case).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.metrics import Counter, Histogram, MeterProvider, UpDownCounter

from otel_trading.recording import registry_for

__all__ = ["BatchedCounter", "BatchedGauge", "BatchedHistogram", "BatchedMetrics"]

_logger = logging.getLogger(__name__)

Attributes = Mapping[str, Any] | None

DEFAULT_MAX_PENDING = 65_536


class _Batched:
    """A wrapped instrument: what the hot path calls. Subclasses add the instrument's method."""

    __slots__ = ("__weakref__", "_batch", "_limit", "_pending", "instrument")

    def __init__(self, batch: BatchedMetrics, instrument: Any) -> None:
        self._batch = batch
        self._pending = batch._pending
        self._limit = batch.max_pending
        self.instrument = instrument

    def _buffer(self, amount: int | float, attributes: Attributes = None) -> None:
        # deque.append is atomic; a len() check racing between threads overshoots the bound by at
        # most one item per thread, which keeps memory bounded without a lock.
        pending = self._pending
        if len(pending) < self._limit:
            pending.append((self, amount, attributes))
        else:
            self._batch._drop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.instrument, 'name', self.instrument)!r})"


class BatchedCounter(_Batched):
    """``add()`` like an OTel ``Counter``/``UpDownCounter``; summed per attribute set on flush."""

    __slots__ = ()
    add = _Batched._buffer


class BatchedHistogram(_Batched):
    """``record()`` like an OTel ``Histogram``; each value reaches the SDK on flush."""

    __slots__ = ()
    record = _Batched._buffer


class BatchedGauge(_Batched):
    """``set()`` like an OTel ``Gauge``; the last value per attribute set is set on flush."""

    __slots__ = ()
    set = _Batched._buffer


def _attributes_key(attributes: Attributes) -> tuple[Any, ...]:
    if not attributes:
        return ()
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items()))


class BatchedMetrics:
    """A bounded, thread-safe buffer in front of OTel synchronous instruments (see the module doc).

    ``meter_provider`` is the provider whose collections flush the buffer (``None``: the global
    one, set now or later). ``max_pending`` bounds the buffered values across all wrapped
    instruments.
    """

    def __init__(self, meter_provider: MeterProvider | None = None, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.max_pending = max_pending
        self._pending: deque[tuple[_Batched, int | float, Attributes]] = deque()
        self._flush_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._dropped = 0
        self._flushed = 0
        self._warned = False
        self.closed = False
        self._remove_hook = registry_for(meter_provider).add_collection_hook(self.flush)
        _live.add(self)

    # -- wrapping ---------------------------------------------------------------------------------
    def wrap(self, instrument: Any) -> Any:
        """A batched front for a synchronous instrument: ``BatchedCounter`` for ``Counter`` and
        ``UpDownCounter``, ``BatchedHistogram`` for ``Histogram``, ``BatchedGauge`` for ``Gauge``."""
        if isinstance(instrument, (Counter, UpDownCounter)):
            return BatchedCounter(self, instrument)
        if isinstance(instrument, Histogram):
            return BatchedHistogram(self, instrument)
        if callable(getattr(instrument, "set", None)):
            return BatchedGauge(self, instrument)
        raise TypeError(
            f"cannot batch {instrument!r}: wrap a synchronous Counter, UpDownCounter, Histogram or Gauge "
            "(observable instruments are already read at collection)"
        )

    # -- state ------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Values buffered and not yet flushed."""
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """Values refused because the buffer was full."""
        return self._dropped

    @property
    def flushed(self) -> int:
        """Values handed to the SDK so far (a counter's summed values count individually)."""
        return self._flushed

    def _drop(self) -> None:
        # Only reached with a full buffer; the lock keeps the count exact across threads.
        with self._drop_lock:
            self._dropped += 1
            warn = not self._warned
            self._warned = True
        if warn:
            _logger.warning(
                "otel-trading: BatchedMetrics buffer full (max_pending=%d); values are dropped and counted "
                "until the next collection flushes it. Raise max_pending or collect more often.",
                self.max_pending,
            )

    # -- flushing ---------------------------------------------------------------------------------
    def flush(self) -> int:
        """Hand every buffered value to its instrument now; returns how many were flushed."""
        with self._flush_lock:
            pending = self._pending
            # Take only what is buffered now: producers may keep appending while this runs.
            taken = [pending.popleft() for _ in range(len(pending))]
            if not taken:
                return 0
            # Group by object identity first (hot paths reuse one attributes mapping), then merge
            # the few groups by attribute value: sorting every item's attributes would cost more.
            by_id: dict[tuple[int, int], list[Any]] = {}
            for handle, amount, attributes in taken:
                if type(handle) is BatchedHistogram:
                    self._call(handle.instrument.record, amount, attributes)
                    continue
                entry = by_id.get((id(handle), id(attributes)))
                if entry is None:
                    by_id[(id(handle), id(attributes))] = [handle, amount, attributes]
                elif type(handle) is BatchedCounter:
                    entry[1] += amount
                else:
                    entry[1] = amount  # a gauge keeps its last value
            merged: dict[tuple[Any, ...], list[Any]] = {}
            for handle, amount, attributes in by_id.values():
                key = (id(handle), _attributes_key(attributes))
                entry = merged.get(key)
                if entry is None:
                    merged[key] = [handle, amount, attributes]
                elif type(handle) is BatchedCounter:
                    entry[1] += amount
                else:
                    entry[1] = amount
            for handle, amount, attributes in merged.values():
                method = handle.instrument.add if type(handle) is BatchedCounter else handle.instrument.set
                self._call(method, amount, attributes)
            self._flushed += len(taken)
            return len(taken)

    @staticmethod
    def _call(method: Callable[..., object], amount: int | float, attributes: Attributes) -> None:
        try:
            method(amount, attributes)
        except Exception:  # pragma: no cover - the SDK swallows its own errors
            _logger.exception("otel-trading: flushing a batched value into %r failed", method)

    def close(self) -> None:
        """Flush what is buffered and stop flushing on collection and at exit.

        Call it when done recording, before shutting the meter provider down: values recorded
        afterwards are still buffered (bounded) but only an explicit ``flush()`` delivers them."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._remove_hook()
        _live.discard(self)

    def __enter__(self) -> BatchedMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BatchedMetrics(pending={self.pending}, dropped={self.dropped}, max_pending={self.max_pending})"


_live: weakref.WeakSet[BatchedMetrics] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # atexit runs handlers last-in first-out. A provider created after this module was imported
    # shuts down first, and its final collection flushes us through the hook; for one created
    # before, this flush runs first and its shutdown exports what was flushed.
    for batch in list(_live):
        try:
            batch.flush()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            _logger.exception("otel-trading: flushing BatchedMetrics at exit failed")
