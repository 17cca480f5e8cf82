"""An asyncio event bus (ticks, orders, fills) that records the guide's event_bus_* metrics.

Events are routed by type (a handler subscribed to a base class also gets its subclasses) and
delivered in publish order by one worker task. The queue is bounded: ``publish()`` waits for room
(backpressure on the producer, nothing dropped); ``publish_nowait()`` raises ``asyncio.QueueFull``
instead. A handler that raises is logged and counted in ``event_bus_handler_errors_total``; the
other handlers and later events are unaffected. ``stop()`` drains everything published before it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider

from otel_trading import metric_contract as mc
from otel_trading.recording import (
    B0,
    BOUNDS,
    C0,
    C1,
    C2,
    MAX,
    MIN,
    SUM,
    Binding,
    CountedRow,
    MetricsRegistry,
    Row,
    Series,
    registry_for,
    sample_gaps,
)
from otel_trading.settings import check_bool, check_int, check_name, resolve_sample_rate

__all__ = ["EventBus", "Handler", "Subscription"]

_logger = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None] | None]

_STOP = object()

# What the worker looks up once per event: (handlers with their is-async flag, row, series).
Route = tuple[tuple[tuple[Handler, bool], ...], Row | None, Series | None]


def _processed_row() -> CountedRow:
    return CountedRow(C1)


def _worker_cancelled() -> bool:
    """Whether the worker task itself is being cancelled, as opposed to a handler raising
    CancelledError on its own (e.g. from a cancelled inner request). Python 3.10 cannot tell the
    two apart, so there the cancellation always propagates."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


class Subscription:
    """Returned by ``subscribe``; call it (or ``unsubscribe()``) to remove the handler."""

    __slots__ = ("_bus", "_event_type", "_handler", "active")

    def __init__(self, bus: EventBus, event_type: type, handler: Handler) -> None:
        self._bus = bus
        self._event_type = event_type
        self._handler = handler
        self.active = True

    def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self._bus._remove(self._event_type, self._handler)

    __call__ = unsubscribe

    def __repr__(self) -> str:
        return f"Subscription({self._event_type.__name__}, {self._handler!r}, active={self.active})"


class EventBus:
    """Typed publish/subscribe on one asyncio event loop.

    ``name`` labels ``event_bus_queue_size{bus=...}`` when a process runs several buses.
    ``sample_rate`` (0..1) times only that share of events for the duration histogram; the
    published/processed/error counters stay exact.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        max_queue_size: int = 10_000,
        metrics_enabled: bool = True,
        meter_provider: MeterProvider | None = None,
        sample_rate: float | None = None,
    ) -> None:
        self.name = check_name("name", name)
        self.max_queue_size = check_int("max_queue_size", max_queue_size, 1)
        self.sample_rate = resolve_sample_rate(sample_rate)
        check_bool("metrics_enabled", metrics_enabled)
        self._handlers: dict[type, list[tuple[Handler, bool]]] = {}
        self._routes: dict[type, Route] = {}
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._failing_handlers: set[int] = set()
        registry = registry_for(meter_provider) if metrics_enabled else None
        if registry is not None and not registry.group_enabled(mc.MetricGroup.EVENT_BUS):
            registry = None  # every event_bus metric is disabled: run exactly as metrics_enabled=False
        # Weak: a bus must not keep its provider's registry (and the SDK state its callbacks reach)
        # alive after the provider is shut down and dropped. The provider holds the registry.
        self._metered = registry is not None
        self._registry: Callable[[], MetricsRegistry | None] = (
            weakref.ref(registry) if registry is not None else lambda: None
        )
        # Per event class: this bus's row (written on its loop only) and the labelled series.
        self._stats: dict[type, tuple[Row, Series]] = {}
        # The same rows, for the publish path's single lookup; None when metrics are off.
        self._published: dict[type, Row] | None = None
        # The last published type and its row: the publish path's one-entry cache.
        self._last_type: type | None = None
        self._last_row: Row | None = None
        self._timed = False
        if registry is not None:
            self._published = {}
            self._timed = registry.enabled(mc.BUS_PROCESSING_DURATION.key) and self.sample_rate > 0
            registry.add_bus(self)

    # -- subscriptions --------------------------------------------------------------------------------
    def subscribe(self, event_type: type[E], handler: Callable[[E], Awaitable[None] | None]) -> Subscription:
        """Call ``handler(event)`` (``def`` or ``async def``) for every event of ``event_type``."""
        if not isinstance(event_type, type):
            raise TypeError(f"event_type must be a class, got {event_type!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
        )
        self._handlers.setdefault(event_type, []).append((handler, is_async))
        self._routes.clear()
        if self._metered:
            self._stats_for(event_type)
        return Subscription(self, event_type, handler)

    def _remove(self, event_type: type, handler: Handler) -> None:
        entries = self._handlers.get(event_type, [])
        for i, (h, _) in enumerate(entries):
            if h is handler:
                del entries[i]
                break
        if not entries:
            self._handlers.pop(event_type, None)
        self._routes.clear()

    def subscriber_counts(self) -> dict[str, int]:
        """{event type name: number of handlers}, for ``event_bus_subscribers_gauge``."""
        counts: dict[str, int] = {}
        for event_type, entries in list(self._handlers.items()):
            counts[event_type.__name__] = counts.get(event_type.__name__, 0) + len(entries)
        return counts

    @property
    def queue_size(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start delivering on the running loop. Events published before start() are kept."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._ensure_queue()
        self._worker = asyncio.create_task(self._run(), name=f"otel-trading-event-bus-{self.name}")

    async def stop(self) -> None:
        """Deliver everything already published, then stop the worker."""
        self._stopped = True
        if self._worker is None:
            return
        if not self._worker.done():
            await self._ensure_queue().put(_STOP)
        worker, self._worker = self._worker, None
        await worker

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- publishing -------------------------------------------------------------------------------------
    async def publish(self, event: object) -> None:
        """Queue ``event``; waits for room when the queue is full (backpressure).

        Counted once queued: a publish cancelled while it waits for room is not counted.
        """
        queue = self._check_open()
        await queue.put(event)
        # No await between the put and the count, so the worker cannot process it uncounted.
        if type(event) is self._last_type:
            # A tick stream repeats one type: skip even the dict lookup (never true with metrics off).
            self._last_row[C0] += 1  # type: ignore[index]
        elif self._published is not None:
            self._count_published(type(event))

    def publish_nowait(self, event: object) -> None:
        """Queue ``event`` or raise ``asyncio.QueueFull``; a refused event is not counted."""
        queue = self._check_open()
        queue.put_nowait(event)
        if type(event) is self._last_type:
            self._last_row[C0] += 1  # type: ignore[index]
        elif self._published is not None:
            self._count_published(type(event))

    def _count_published(self, event_type: type) -> None:
        row = self._published.get(event_type)  # type: ignore[union-attr]
        if row is None:
            row = self._stats_for(event_type)[0]
        self._last_type, self._last_row = event_type, row
        row[C0] += 1

    def publish_threadsafe(self, event: object) -> None:
        """Publish from another thread (e.g. a market-data feed's callback thread)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"event bus {self.name!r} is not started; start() it before publishing from threads")
        if threading.get_ident() == getattr(loop, "_thread_id", None):
            self.publish_nowait(event)
            return
        asyncio.run_coroutine_threadsafe(self.publish(event), loop)

    def _check_open(self) -> asyncio.Queue[Any]:
        if self._stopped:
            raise RuntimeError(f"event bus {self.name!r} is stopped; start() it again before publishing")
        return self._ensure_queue()

    def _ensure_queue(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue(self.max_queue_size)
        return self._queue

    # -- delivery -----------------------------------------------------------------------------------------
    def _route(self, event_type: type) -> Route:
        """Handlers for ``event_type`` plus its metric row and series (None when metrics are off)."""
        handlers: list[tuple[Handler, bool]] = []
        for klass in event_type.__mro__:
            handlers.extend(self._handlers.get(klass, ()))
        row, series = self._stats_for(event_type) if self._metered else (None, None)
        route = (tuple(handlers), row, series)
        self._routes[event_type] = route
        return route

    def _stats_for(self, event_type: type) -> tuple[Row, Series]:
        stats = self._stats.get(event_type)
        if stats is None:
            registry = self._registry()
            if registry is not None:
                series = registry.event(event_type.__name__)
            else:  # its provider is gone: count into a series nothing reads
                series = Series({"event_type": event_type.__name__}, None, Binding.ROWS)
            source = series.source_for(self, _processed_row)
            stats = self._stats[event_type] = (source.row, series)  # type: ignore[attr-defined]
            self._published[event_type] = stats[0]  # type: ignore[index]
        return stats

    async def _run(self) -> None:
        queue = self._ensure_queue()
        if self._metered:
            await self._run_metered(queue)
            return
        # The delivery loop below is _run_metered's minus the recording, on purpose: a shared
        # per-event helper coroutine would cost both paths an extra await on every tick.
        routes = self._routes
        while True:
            event = await queue.get()
            if event is _STOP:
                return
            try:
                handlers = routes[type(event)][0]
            except KeyError:
                handlers = self._route(type(event))[0]
            for handler, is_async in handlers:
                try:
                    if is_async:
                        await handler(event)  # type: ignore[misc]
                    else:
                        handler(event)
                except Exception as exc:
                    self._handler_failed(event, handler, exc, None)
                except asyncio.CancelledError as exc:
                    if _worker_cancelled():
                        raise
                    self._handler_failed(event, handler, exc, None)

    async def _run_metered(self, queue: asyncio.Queue[Any]) -> None:
        # The tick path: one dict lookup per event, no method calls, observe() inlined. Measured
        # on a 2-core VM, each of these cuts 50-250 ns from a ~2 us event (bench/run.py).
        routes = self._routes
        first_bound = BOUNDS[0]
        timed = self._timed
        gap = sample_gaps(self.sample_rate) if timed else None
        every = timed and gap is None  # sample_rate 1: time every event, no countdown
        # Events until the next timed one (sampling); infinite (never) when the histogram is off.
        skip: float = gap() if gap is not None else math.inf
        while True:
            event = await queue.get()
            if event is _STOP:
                return
            try:
                handlers, row, series = routes[type(event)]
            except KeyError:
                handlers, row, series = self._route(type(event))
            if every:
                start = perf_counter()
            elif skip > 1:
                skip -= 1
                start = None
            else:
                skip = gap()  # type: ignore[misc]
                start = perf_counter()
            for handler, is_async in handlers:
                try:
                    if is_async:
                        await handler(event)  # type: ignore[misc]
                    else:
                        handler(event)
                except Exception as exc:
                    self._handler_failed(event, handler, exc, row)
                except asyncio.CancelledError as exc:
                    if _worker_cancelled():
                        raise
                    self._handler_failed(event, handler, exc, row)
            # The row is a CountedRow: a timed event is counted as processed by its histogram count.
            if start is None:
                row[C1] += 1  # type: ignore[index]
            else:
                elapsed = perf_counter() - start
                if series.fast:  # type: ignore[union-attr]
                    row[SUM] += elapsed  # type: ignore[index]
                    if elapsed < row[MIN]:  # type: ignore[index]
                        row[MIN] = elapsed  # type: ignore[index]
                    if elapsed > row[MAX]:  # type: ignore[index]
                        row[MAX] = elapsed  # type: ignore[index]
                    if elapsed <= first_bound:
                        # Most ticks are handled within the first bucket (10 us): skip the bisect,
                        # which costs more than the rest of this block.
                        row[B0] += 1  # type: ignore[index]
                    else:
                        row[B0 + bisect_left(BOUNDS, elapsed)] += 1  # type: ignore[index]
                elif not series.observe_slow(row, elapsed):  # type: ignore[union-attr,arg-type]
                    row[C1] += 1  # type: ignore[index]

    def _handler_failed(self, event: object, handler: Handler, exc: BaseException, row: Row | None) -> None:
        if row is not None:
            row[C2] += 1
        # Log a failing handler once with its traceback, then quietly: a handler that fails on
        # every tick must not flood the log.
        key = id(handler)
        if key not in self._failing_handlers:
            self._failing_handlers.add(key)
            _logger.error(
                "event bus %r: handler %r failed on %s (further failures of this handler are logged at "
                "DEBUG and counted in event_bus_handler_errors_total)",
                self.name,
                handler,
                type(event).__name__,
                exc_info=exc,
            )
        else:
            _logger.debug("event bus %r: handler %r failed again: %r", self.name, handler, exc)
