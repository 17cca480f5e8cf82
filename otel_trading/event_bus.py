"""An asyncio event bus (ticks, orders, fills) that records the guide's event_bus_* metrics.

Events are routed by type (a handler subscribed to a base class also gets its subclasses) and
delivered in publish order by one worker task. The queue is bounded: ``publish()`` waits for room
(backpressure on the producer, nothing dropped); ``publish_nowait()`` raises ``asyncio.QueueFull``
instead. A handler that raises is logged and counted in ``event_bus_handler_errors_total``; the
other handlers and later events are unaffected.

``stop()`` drains: it returns once every event published before it returns has been delivered,
including follow-ups that handlers publish while it drains, or once ``drain_timeout`` seconds
have passed; what is still queued then is dropped, logged and counted in ``dropped``. From then
on a publish raises ``EventBusStoppedError`` (also logged and counted) until ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import sys
import threading
import weakref
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry.metrics import MeterProvider

from otel_trading import metric_contract as mc
from otel_trading.errors import EventBusStoppedError
from otel_trading.loop_monitor import LoopMonitor, lease_for
from otel_trading.recording import (
    B0,
    BOUNDS,
    HANDLER_ERRORS,
    MAX,
    MIN,
    PROCESSED,
    PUBLISHED,
    SUM,
    Binding,
    CountedRow,
    MetricsRegistry,
    Row,
    Series,
    registry_for,
    sample_gaps,
)
from otel_trading.recording.exemplars import current_context
from otel_trading.recording.fast_rows import record as _fast_record
from otel_trading.settings import check_bool, check_int, check_name, check_number, resolve_sample_rate

__all__ = ["EventBus", "Handler", "Subscription"]

_logger = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None] | None]

# The stop marker: put at the end of the queue by stop(); the worker ends the drain when it reaches
# the marker with nothing queued behind it, else puts it back at the end (see _at_stop_marker).
_STOP = object()

#: How long ``stop()`` drains by default, in seconds (``EventBus(drain_timeout=...)``).
DEFAULT_DRAIN_TIMEOUT = 10.0

# What the worker looks up once per event: (handlers with their is-async flag, row, series).
Route = tuple[tuple[tuple[Handler, bool], ...], Row | None, Series | None]


def _processed_row() -> CountedRow:
    return CountedRow(PROCESSED)


def _check_event(event: object) -> None:
    """A class or None is a mistake (``publish(Fill)`` for ``publish(Fill(...))``): it would reach
    no subscriber of the intended type and be labelled ``type``/``NoneType``."""
    if isinstance(event, type):
        raise TypeError(f"event must be an instance, got the class {event.__qualname__}: publish {event.__name__}(...)")
    if event is None:
        raise TypeError("event must be an object to deliver, got None")


class _WorkerTask(asyncio.Task):  # type: ignore[type-arg]
    """The worker's task on Python 3.10, which has no ``Task.cancelling()``: counts the requests to
    cancel it, so that a handler raising CancelledError on its own is told apart there too."""

    cancel_requests = 0

    def cancel(self, *args: Any, **kwargs: Any) -> bool:
        self.cancel_requests += 1
        return super().cancel(*args, **kwargs)


def _worker_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    if sys.version_info >= (3, 11):
        return asyncio.create_task(coro, name=name)
    return _WorkerTask(coro, name=name)


def _worker_cancelled() -> bool:
    """Whether the worker task itself is being cancelled, as opposed to a handler raising
    CancelledError on its own (e.g. from a cancelled inner request)."""
    task = asyncio.current_task()
    if sys.version_info >= (3, 11):
        return task is None or task.cancelling() > 0
    requests = getattr(task, "cancel_requests", None)
    return requests is None or requests > 0


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
    published/processed/error counters stay exact. ``drain_timeout`` bounds ``stop()``'s drain
    (seconds; ``math.inf`` waits for ever).
    """

    def __init__(
        self,
        *,
        name: str = "default",
        max_queue_size: int = 10_000,
        metrics_enabled: bool = True,
        meter_provider: MeterProvider | None = None,
        sample_rate: float | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        self.name = check_name("name", name)
        self.max_queue_size = check_int("max_queue_size", max_queue_size, 1)
        self.sample_rate = resolve_sample_rate(sample_rate)
        self.drain_timeout = _check_timeout("drain_timeout", drain_timeout)
        check_bool("metrics_enabled", metrics_enabled)
        self._handlers: dict[type, list[tuple[Handler, bool]]] = {}
        self._routes: dict[type, Route] = {}
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # True once the bus refuses publishes: from the end of a drain (or after a stop() of a bus
        # never started) until start().
        self._stopped = False
        # The running stop(), which later concurrent stop() calls wait for.
        self._stopping: asyncio.Future[None] | None = None
        # The task putting the stop marker back at the end of the queue (see _at_stop_marker).
        self._marker: asyncio.Task[None] | None = None
        # Publishers waiting for room in the queue: a drain is not over while one waits.
        self._waiting = 0
        #: Events refused (published to a stopped bus) or dropped (still queued when a drain
        #: timed out). Each is also logged: the first at WARNING/ERROR, then at DEBUG.
        self.dropped = 0
        self._refusals_logged = False
        self._failing_handlers: set[int] = set()
        registry = registry_for(meter_provider) if metrics_enabled else None
        # The loop the bus runs on is monitored from start() to stop() (otel_trading.loop_monitor),
        # whether or not the event_bus metrics are on: its own switch is the event_loop group.
        self._loop_registry: Callable[[], MetricsRegistry | None] = (
            weakref.ref(registry) if registry is not None and registry.enabled(mc.LOOP_LAG.key) else lambda: None
        )
        self._loop_monitor: LoopMonitor | None = None
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
        # The last published type and its row: the publish path's one-entry cache (with metrics
        # off, a scratch row nothing reads, so both delivery paths share the publish code).
        self._last_type: type | None = None
        self._last_row: Row | None = None
        self._scratch: Row = [0]
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
        self._worker = _worker_task(self._run(), name=f"otel-trading-event-bus-{self.name}")
        self._watch_loop()

    async def stop(self, timeout: float | None = None) -> None:
        """Deliver everything published, then stop; publishing raises from then on until start().

        Events published while the drain runs are accepted and delivered too, follow-ups that
        handlers publish included. The drain is bounded by ``timeout`` seconds (default: the bus's
        ``drain_timeout``): when it runs out, the handler still running is cancelled and the events
        still queued are dropped, logged at ERROR and counted in ``dropped``. A bus that was never
        started delivers what was published to it first. Concurrent calls wait for the same drain.
        """
        limit = self.drain_timeout if timeout is None else _check_timeout("timeout", timeout)
        if self._stopping is not None and not self._stopping.done():
            await asyncio.shield(self._stopping)
            return
        queue = self._queue
        if self._worker is None or self._worker.done():
            if queue is None or (not queue.qsize() and not self._waiting):
                self._worker = None
                self._stopped = True
                self._queue = None
                self._unwatch_loop()
                return
            await self.start()  # never started (or its worker was cancelled): drain what waits
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            await self._drain(limit)
        finally:
            self._unwatch_loop()
            self._stopping.set_result(None)

    def _watch_loop(self) -> None:
        """Monitor the loop's lag while the bus runs (one timer per loop, shared with other buses)."""
        registry = self._loop_registry()
        if registry is None or self._loop is None:
            return
        if self._loop_monitor is not None and self._loop_monitor.loop is not self._loop:
            self._unwatch_loop()  # started again on another loop without a stop() in between
        if self._loop_monitor is None:
            self._loop_monitor = lease_for(registry, self._loop)

    def _unwatch_loop(self) -> None:
        monitor, self._loop_monitor = self._loop_monitor, None
        if monitor is not None:
            monitor.stop()

    async def _drain(self, limit: float) -> None:
        worker = self._worker
        assert worker is not None and self._queue is not None
        queue = self._queue
        # A task, so that stop() never blocks on a full queue: the marker waits for room like a publisher.
        self._marker = asyncio.ensure_future(queue.put(_STOP))
        timed_out = False
        try:
            done, _ = await asyncio.wait({worker}, timeout=None if math.isinf(limit) else limit)
            timed_out = not done
        finally:
            # Normally the worker has ended the drain; on a timeout (or stop() being cancelled) the
            # bus stops here, and whatever is still queued is dropped and counted.
            self._stopped = True
            self._worker = None
            self._queue = None
            if self._marker is not None:
                self._marker.cancel()
                self._marker = None
            cancelled = not worker.done()
            if cancelled:
                worker.cancel()
            left = self._discard(queue)
            if cancelled or left:
                _logger.error(
                    "event bus %r: stop() %s; %d undelivered event(s) dropped (%s), counted in the bus's `dropped`%s",
                    self.name,
                    f"gave up after {limit:g} s of draining" if timed_out else "was cancelled while draining",
                    sum(left.values()),
                    ", ".join(f"{k}: {n}" for k, n in left.items()) or "none queued",
                    "; the handler still running was cancelled" if cancelled else "",
                )
        if cancelled:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({worker})
        elif not worker.cancelled():
            failure = worker.exception()
            if failure is not None:
                raise failure

    def _discard(self, queue: asyncio.Queue[Any]) -> dict[str, int]:
        """Empty ``queue`` of a stopped bus, counting what it held in ``dropped``; {type name: count}."""
        left: dict[str, int] = {}
        while True:
            try:
                event = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if event is not _STOP:
                name = type(event).__name__
                left[name] = left.get(name, 0) + 1
                self.dropped += 1
        return left

    def _at_stop_marker(self, queue: asyncio.Queue[Any]) -> bool:
        """The worker reached the stop marker: True ends the drain (the bus refuses publishes from
        now on) when nothing is queued behind it and no publisher waits for room; otherwise the
        marker goes back to the end of the queue, behind the follow-ups."""
        if not queue.qsize() and not self._waiting:
            self._stopped = True
            return True
        # As a task that waits for room like any publisher: the worker goes on delivering meanwhile
        # (and yields to waiting publishers when the queue runs empty).
        self._marker = asyncio.ensure_future(queue.put(_STOP))
        return False

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

        Counted once queued: a publish cancelled while it waits for room is not counted. A handler
        of this bus never waits (it would wait for itself): its event goes in over the bound. Raises
        ``TypeError`` for a class or None, ``EventBusStoppedError`` when the bus is stopped.
        """
        queue = self._check_open(event)
        # A tick stream repeats one type: the cached row skips even the dict lookup.
        row = self._last_row if type(event) is self._last_type else self._row_for(event)
        if queue.full():
            await self._put_waiting(queue, event)
        else:
            queue.put_nowait(event)
        # No await between the put and the count, so the worker cannot process it uncounted.
        row[PUBLISHED] += 1  # type: ignore[index]

    def publish_nowait(self, event: object) -> None:
        """Queue ``event`` or raise ``asyncio.QueueFull``; a refused event is not counted."""
        queue = self._check_open(event)
        row = self._last_row if type(event) is self._last_type else self._row_for(event)
        queue.put_nowait(event)
        row[PUBLISHED] += 1  # type: ignore[index]

    def _row_for(self, event: object) -> Row:
        """Check an event of a type other than the last one, and return its published row."""
        _check_event(event)
        event_type = type(event)
        if self._published is None:
            row = self._scratch
        else:
            row = self._published.get(event_type) or self._stats_for(event_type)[0]
        self._last_type, self._last_row = event_type, row
        return row

    async def _put_waiting(self, queue: asyncio.Queue[Any], event: object) -> None:
        if asyncio.current_task() is self._worker:
            # A handler publishing a follow-up into its own full bus would wait for room that only
            # it can make, for ever: its event goes in over the bound instead.
            queue._put(event)
            return
        self._waiting += 1
        try:
            await queue.put(event)
        finally:
            self._waiting -= 1
        if queue is not self._queue:
            # The drain timed out (or stop() was cancelled) while this publisher waited: the queue
            # it got into is no longer read.
            self._refuse(event, "stopped before the event got a place in its queue")

    def publish_threadsafe(self, event: object) -> None:
        """Publish from another thread (e.g. a market-data feed's callback thread).

        Does not wait: an event refused on the loop (the bus stopped meanwhile) is logged and
        counted in ``dropped``.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"event bus {self.name!r} is not started; start() it before publishing from threads")
        _check_event(event)
        if threading.get_ident() == getattr(loop, "_thread_id", None):
            self.publish_nowait(event)
            return
        asyncio.run_coroutine_threadsafe(self.publish(event), loop)

    def _check_open(self, event: object) -> asyncio.Queue[Any]:
        if self._stopped:
            self._refuse(event, "stopped; start() it again before publishing")
        return self._ensure_queue()

    def _refuse(self, event: object, why: str) -> None:
        """Refuse ``event`` loudly: counted in ``dropped``, logged, and raised to the publisher."""
        self.dropped += 1
        message = f"event bus {self.name!r} is {why} ({type(event).__name__} refused)"
        if not self._refusals_logged:
            self._refusals_logged = True
            _logger.warning("%s; further refusals are logged at DEBUG and counted in the bus's `dropped`", message)
        else:
            _logger.debug("%s", message)
        raise EventBusStoppedError(message)

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
                if self._at_stop_marker(queue):
                    return
                continue
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
        fast_record = _fast_record  # a local, like first_bound: no global lookup per event
        timed = self._timed
        gap = sample_gaps(self.sample_rate) if timed else None
        every = timed and gap is None  # sample_rate 1: time every event, no countdown
        # Events until the next timed one (sampling); infinite (never) when the histogram is off.
        skip: float = gap() if gap is not None else math.inf
        while True:
            event = await queue.get()
            if event is _STOP:
                if self._at_stop_marker(queue):
                    return
                continue
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
                row[PROCESSED] += 1  # type: ignore[index]
            else:
                elapsed = perf_counter() - start
                if series.fast:  # type: ignore[union-attr]
                    # Compiled: the update and "is a span current?" in one C call, cheaper than the Python.
                    held = fast_record(row, elapsed) if fast_record is not None else None  # type: ignore[arg-type]
                    if held is None:
                        # recording.observe() inlined: the bus row of bench/run.py pays for the call.
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
                        held = current_context()  # a span (or another value) is current: an exemplar candidate
                    if held:
                        series.offer_exemplar(elapsed)  # type: ignore[union-attr]
                elif not series.observe_slow(row, elapsed):  # type: ignore[union-attr,arg-type]
                    row[PROCESSED] += 1  # type: ignore[index]

    def _handler_failed(self, event: object, handler: Handler, exc: BaseException, row: Row | None) -> None:
        if row is not None:
            row[HANDLER_ERRORS] += 1
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


def _check_timeout(arg: str, value: float) -> float:
    """Seconds > 0; ``math.inf`` means no limit."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    seconds = check_number(arg, value)
    if seconds <= 0:
        raise ValueError(f"{arg} must be > 0 seconds (math.inf for no limit), got {value!r}")
    return seconds
