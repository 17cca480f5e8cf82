"""Event-loop lag: a timer on each monitored asyncio loop records how late the loop ran it.

A handler that blocks (a synchronous HTTP call, a heavy computation) stalls every coroutine of its
loop, yet the bus's processing histogram only shows the guilty handler. The monitor makes the stall
itself visible, the way Node.js' ``monitorEventLoopDelay`` does: a timer is due every ``interval``
seconds; when it runs, how late it ran is one observation of ``otel_trading_event_loop_lag_seconds``,
and the next one is due ``interval`` after that. An idle loop answers within a millisecond; a stall
of S seconds shows as one observation between ``S - interval`` and ``S``.

Each ``EventBus`` monitors the loop it runs on (from ``start()`` to ``stop()``);
:func:`monitor_event_loop` monitors any other loop. Monitors of one loop reporting to one provider
share a single timer: the first one's name and interval stand, and the timer stops with the last
``stop()``. The timer is a plain loop callback, not a task, so ``asyncio.all_tasks()`` and a loop's
shutdown never see it; its cost is one callback per interval (measured in ``bench/run.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from types import TracebackType

from opentelemetry.metrics import MeterProvider

from otel_trading import metric_contract as mc
from otel_trading.recording import Binding, MetricsRegistry, Row, Series, SingleRow, observe, registry_for
from otel_trading.settings import check_name, check_number

__all__ = ["DEFAULT_INTERVAL", "MAX_INTERVAL", "LoopMonitor", "lease_for", "monitor_event_loop"]

_logger = logging.getLogger(__name__)

#: Seconds between two probes of a loop: what a stall is resolved to (like Node.js' default 10 ms
#: resolution, in Python's terms). A 300 ms stall always shows above 0.25 s.
DEFAULT_INTERVAL = 0.02
#: The longest interval accepted: a probe rarer than this would miss most stalls.
MAX_INTERVAL = 60.0


class _Probe:
    """The one timer of a (loop, registry): reschedules itself and records how late it ran."""

    __slots__ = ("__weakref__", "_due", "_halted", "_handle", "_loop", "interval", "name", "row", "series", "users")

    def __init__(self, loop: asyncio.AbstractEventLoop, series: Series, name: str, interval: float) -> None:
        # Weak: a probe is reachable from its loop (through the scheduled handle) and from the
        # module's table keyed weakly by that loop; a strong reference back would keep both alive.
        self._loop = weakref.ref(loop)
        self.series = series
        self.name = name
        self.interval = interval
        self.users = 0
        self._halted = False
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        source = series.source_for(self, lambda: SingleRow(series.bounds))
        self.row: Row = source.row  # type: ignore[attr-defined]

    def start(self) -> None:
        """Schedule the first probe; runs on the loop's thread."""
        loop = self._loop()
        if self._halted or loop is None or loop.is_closed() or self._handle is not None:
            return
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        loop = self._loop()
        if self._halted or loop is None:
            return
        now = loop.time()
        lag = now - self._due
        if lag < 0.0:
            lag = 0.0  # the loop may run a timer up to its clock resolution early: that is no lag
        series = self.series
        try:
            if series.fast or series.binding is Binding.PENDING:
                # The rows are the histogram (or will be once a provider is set). While none is set,
                # the values are not also kept for the SDK Histogram fallback, as durations are: a
                # bot that never sets a provider would keep 50 a second up to the pending cap.
                observe(self.row, lag, series.bounds)
            else:
                series.observe_slow(self.row, lag)
        finally:
            self._due = now + self.interval
            self._handle = loop.call_at(self._due, self._fire)

    def halt(self) -> None:
        """Stop probing; from any thread."""
        self._halted = True
        loop = self._loop()
        if loop is None or loop.is_closed():
            return
        if _running_here(loop):
            self._cancel()
        else:
            # RuntimeError: closed in the meantime, and its timers are gone with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()


class LoopMonitor:
    """A handle on the monitoring of one event loop; ``stop()`` (or leaving ``with``) releases it.

    ``name`` is the ``loop`` label the lag is recorded under and ``interval`` the probe's period
    (those of the loop's first monitor, when several share it). ``running`` is False once stopped,
    and for a monitor that records nothing (``OTEL_TRADING_DISABLED_METRICS`` names ``event_loop``
    or ``loop_lag``).
    """

    __slots__ = ("_probe", "interval", "loop", "name")

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, interval: float, probe: _Probe | None) -> None:
        self.loop = loop
        self.name = name
        self.interval = interval
        self._probe = probe

    @property
    def running(self) -> bool:
        return self._probe is not None

    def stop(self) -> None:
        """Release this handle; the loop's timer stops with the last handle released. Idempotent."""
        probe, self._probe = self._probe, None
        if probe is not None:
            _release(self.loop, probe)

    def __enter__(self) -> LoopMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LoopMonitor(name={self.name!r}, interval={self.interval}, running={self.running})"


# (loop, registry) -> its probe. Both keys weak: a closed and dropped loop, or a dropped provider's
# registry, takes its entry along.
_probes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[MetricsRegistry, _Probe]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def monitor_event_loop(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    name: str | None = None,
    interval: float = DEFAULT_INTERVAL,
    meter_provider: MeterProvider | None = None,
) -> LoopMonitor:
    """Record ``otel_trading_event_loop_lag_seconds{loop=name}`` for ``loop`` until ``stop()``.

    ``loop`` defaults to the running loop (call it from a coroutine); another thread's loop may be
    passed, running or not yet started. ``name`` defaults to the name of the thread running the loop
    (``MainThread`` under ``asyncio.run``). ``interval`` (seconds, 0.001..60) is how often the loop
    is probed, and so the resolution of a stall. ``meter_provider`` defaults to the global provider,
    as for every component. An ``EventBus`` with metrics on monitors its own loop already: call this
    before starting it to choose the name or interval, or for loops that run no bus.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "monitor_event_loop() needs a running event loop: call it from a coroutine, or pass loop="
            ) from None
    elif not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(f"loop must be an asyncio event loop, got {type(loop).__name__}")
    if name is not None:
        name = check_name("name", name)
    interval = check_number("interval", interval, 0.001)
    if interval > MAX_INTERVAL:
        raise ValueError(f"interval must be <= {MAX_INTERVAL:g} seconds, got {interval!r}")
    return lease_for(registry_for(meter_provider), loop, name, interval)


def lease_for(
    registry: MetricsRegistry | None,
    loop: asyncio.AbstractEventLoop,
    name: str | None = None,
    interval: float = DEFAULT_INTERVAL,
) -> LoopMonitor:
    """A handle on ``loop``'s probe for ``registry`` (made and started if it is the first); for
    components (``EventBus.start()``) whose arguments are already checked."""
    label = name or _thread_name(loop)
    if registry is not None:
        registry = registry.adopted_by or registry  # one probe per provider, however it was named
    if registry is None or not registry.enabled(mc.LOOP_LAG.key):
        return LoopMonitor(loop, label, interval, None)
    if loop.is_closed():
        raise RuntimeError("cannot monitor a closed event loop")
    with _lock:
        per_registry = _probes.get(loop)
        if per_registry is None:
            per_registry = _probes[loop] = weakref.WeakKeyDictionary()
        probe = per_registry.get(registry)
        fresh = probe is None
        if probe is None:
            probe = per_registry[registry] = _Probe(loop, registry.loop(label), label, interval)
        elif (name is not None and name != probe.name) or interval != probe.interval:
            _logger.debug(
                "otel-trading: loop %r is already monitored as %r every %gs; keeping that",
                label,
                probe.name,
                probe.interval,
            )
        probe.users += 1
    if fresh:
        if _running_here(loop):
            probe.start()
        else:
            loop.call_soon_threadsafe(probe.start)
    return LoopMonitor(loop, probe.name, probe.interval, probe)


def _release(loop: asyncio.AbstractEventLoop, probe: _Probe) -> None:
    with _lock:
        probe.users -= 1
        if probe.users > 0:
            return
        per_registry = _probes.get(loop)
        if per_registry is not None:
            for registry, known in list(per_registry.items()):
                if known is probe:
                    del per_registry[registry]
    probe.halt()


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _thread_name(loop: asyncio.AbstractEventLoop) -> str:
    """The name of the thread running ``loop``; the calling thread's if it is not running yet."""
    if not _running_here(loop):
        ident = getattr(loop, "_thread_id", None)  # set by BaseEventLoop while it runs
        if ident is not None:
            for thread in threading.enumerate():
                if thread.ident == ident:
                    return thread.name
    return threading.current_thread().name
