"""pyee (12.1 .. 16.1): event-bus metrics for its emitters, with the event name as ``event_type``.

Every pyee emitter's ``emit`` runs ``EventEmitter._call_handlers(event, args, kwargs)``, which hands
each handler to the emitter class's ``_emit_run``: the base ``EventEmitter`` runs it inline,
``AsyncIOEventEmitter`` schedules coroutine handlers as tasks (fire and forget),
``ExecutorEventEmitter`` submits every handler to its executor. What is patched:

==========================================  ======================================================
``EventEmitter._call_handlers``             wrapped: one event published per ``emit``; processed
                                            and timed once every handler it was given to has
                                            completed; handler errors counted
``AsyncIOEventEmitter._emit_run``,          wrapped: pyee's own is given a stand-in for the
``ExecutorEventEmitter._emit_run``          handler that counts its error and, for a coroutine or
                                            an executor run, makes the event wait for its end
                                            (pyee schedules the stand-in's coroutine, which awaits
                                            the handler's); return values, exceptions and pyee's
                                            ``error`` events are unchanged
``EventEmitter.__init__``                   bind the emitter (subscriber gauge, queue gauge)
==========================================  ======================================================

pyee's own events are not the app's: ``new_listener`` and ``error`` (and ``failure`` on
``TwistedEventEmitter``) are never counted, and a handler error is counted under the type of the
event whose handler raised, not as an ``error`` event. ``event_bus_subscribers_gauge`` reads each
emitter's handler table at collection. ``event_bus_queue_size{bus="AsyncIOEventEmitter"}`` is the
number of handler tasks still pending (the emitter's ``complete`` property is false while it is
not 0); the other emitters have no queue and report none. Emitters whose ``_emit_run`` is another
one (``TrioEventEmitter``, ``TwistedEventEmitter``, an app's own override) count subscribers only,
with one warning per class: their handlers run where otel-trading cannot see them complete, and
events published but never processed would read as stuck. Under
``pyee.uplift`` an event emitted once counts as published once, and as processed on each emitter
that has handlers for it. The wrappers are installed only when the release has everything
``reliance.RELIANCE`` declares; otherwise pyee is left out whole, with one warning.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref
from asyncio import CancelledError, iscoroutine
from asyncio import Future as AsyncioFuture
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any

from otel_trading import metric_contract as mc
from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.arguments import label_of
from otel_trading.instrumentation._core.binding import UNTIMED, HotEntry
from otel_trading.instrumentation._core.hot_path import named_as
from otel_trading.instrumentation._core.identity import keep_by_id
from otel_trading.instrumentation._core.reporting import report, warn_once
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.instrumentation.pyee.reliance import RELIANCE
from otel_trading.recording import (
    B0,
    BOUNDS,
    HANDLER_ERRORS,
    MAX,
    MIN,
    PROCESSED,
    PUBLISHED,
    SUM,
    MetricsRegistry,
    Row,
    Series,
)
from otel_trading.recording.exemplars import current_context
from otel_trading.recording.rows import fork_safe

__all__ = ["EmitterBinding", "PyeeEmitters"]

#: Events pyee emits itself, never counted as the app's.
OWN_EVENTS = frozenset({"new_listener", "error"})
_TWISTED_OWN_EVENTS = OWN_EVENTS | {"failure"}


class _Event(HotEntry["_Event"]):
    """One ``event_type`` label: its series and the per-thread rows every emitter counts it in.

    Row columns: ``PUBLISHED``, ``PROCESSED`` (the histogram count, plus the events not timed),
    ``HANDLER_ERRORS``. It is its own ``binding`` (what ``record_timed`` reads).
    """

    __slots__ = ("series", "timed")

    def __init__(self, series: Series, timed: bool, owner: object) -> None:
        self.series = series
        self.timed = timed
        #: ``hot.fast`` is the hot path's one test: True only when timed and bound to the rows.
        self.hot: Any = series if timed else UNTIMED
        super().__init__(self, PROCESSED, owner)

    def error(self) -> None:
        self.row()[HANDLER_ERRORS] += 1


_LAST = object()


class _Dispatch:
    """One emit on an emitter that schedules handlers: processed when its last handler is done.

    ``pending`` holds one element per completion still to come (the emit itself included, at the
    bottom); each completion pops one (``list.pop`` is atomic), and the one that pops the bottom
    element was the last: it records the event. Completions may come from executor threads.
    """

    __slots__ = ("__weakref__", "event", "pending", "start")

    def __init__(self, event: _Event, start: float) -> None:
        self.event = event
        self.start = start
        self.pending: list[Any] = [_LAST]

    def expect(self) -> None:
        """One more completion to wait for (a handler's coroutine or executor run)."""
        self.pending.append(None)

    def add(self, future: Any) -> None:
        self.pending.append(None)
        future.add_done_callback(self.done)

    def done(self, future: Any) -> None:
        try:
            if not future.cancelled() and future.exception() is not None:
                self.event.error()
        except Exception as exc:
            report("recording a pyee handler", exc)
        self.finish()

    def finish(self) -> None:
        try:
            if self.pending.pop() is _LAST:
                self.event.observe(perf_counter() - self.start)
        except Exception as exc:
            report("recording a pyee event", exc)


class _Current(threading.local):
    """The dispatch whose handlers this thread is handing to ``_emit_run`` right now: a
    ``(event, start)`` marker until a handler schedules work, then a ``_Dispatch``."""

    dispatch: Any = None


def _scheduled(current: _Current, dispatch: Any) -> _Dispatch:
    """The current dispatch, made a ``_Dispatch`` (a handler scheduled work)."""
    if dispatch.__class__ is tuple:
        dispatch = current.dispatch = _Dispatch(*dispatch)
    return dispatch


def _event_of(dispatch: Any) -> _Event:
    event: _Event = dispatch[0] if dispatch.__class__ is tuple else dispatch.event
    return event


_CURRENT = _Current()


class _UpliftSeen(threading.local):
    """The kwargs of the last uplifted emit counted in this thread (``pyee.uplift`` hands one
    emit's very same kwargs dict to both emitters' ``_call_handlers``)."""

    kwargs: Any = None


_UPLIFT_SEEN = _UpliftSeen()

#: How an emitter's handlers run, decided by its class's ``_emit_run``.
SYNC, SCHEDULED, UNKNOWN = "sync", "scheduled", "unknown"


class EmitterBinding:
    """One instrumented emitter, as the registry's queue-size and subscriber gauges see it."""

    __slots__ = ("__weakref__", "_ref", "events", "mode", "name", "own", "queued")

    def __init__(self, emitter: Any, mode: str, own: frozenset[str], queued: bool) -> None:
        self._ref = weakref.ref(emitter)
        self.mode = mode
        self.own = own
        #: The label of ``event_bus_queue_size``: the emitter's class.
        self.name = type(emitter).__name__
        self.queued = queued
        #: event -> _Event (or None for pyee's own events): the hot path's second lookup.
        self.events: dict[Any, _Event | None] = dict.fromkeys(own)

    @property
    def queue_size(self) -> int | None:
        if not self.queued:
            return None
        emitter = self._ref()
        if emitter is None:
            return 0
        try:
            return len(emitter._waiting)
        except Exception as exc:
            report("reading a pyee emitter's pending tasks", exc)
            return 0

    def subscriber_counts(self) -> dict[str, int]:
        emitter = self._ref()
        if emitter is None:
            return {}
        try:
            counts: dict[str, int] = {}
            for event, handlers in list(emitter._events.items()):
                if event in self.own:
                    continue
                label = label_of(event)
                counts[label] = counts.get(label, 0) + len(handlers)
            return counts
        except Exception as exc:
            report("reading a pyee emitter's handlers", exc)
            return {}


class PyeeEmitters:
    """Instruments pyee's emitters."""

    target = "pyee"

    def __init__(self, session: Session) -> None:
        self.session = session
        self._registry: MetricsRegistry = session.registry
        self._guarded_bind = session.guarded("binding a pyee emitter", self._bind)
        # id(emitter) -> binding: the hot path's first lookup; emptied by uninstrument().
        self._by_id: dict[int, EmitterBinding] = {}
        session.fast_lookups.append(self._by_id)
        # event -> _Event, shared by every emitter (same label, same rows)
        self._events: dict[Any, _Event] = {}
        self._lock = threading.Lock()
        fork_safe(self)
        self._timed = session.registry.enabled(mc.BUS_PROCESSING_DURATION.key)
        self._base: type | None = None
        self._known_runs: dict[Any, str] = {}
        self._queued_runs: set[Any] = set()
        self._uplift: list[Any] = [None]

    def start(self) -> None:
        self.session.on_import("pyee.base", self._patch, self.target)
        self.session.on_import("pyee.asyncio", self._patch_asyncio, "pyee.asyncio")
        self.session.on_import("pyee.executor", self._patch_executor, "pyee.executor")
        self.session.on_import("pyee.uplift", self._watch_uplift, "pyee.uplift")

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        if not RELIANCE.holds():
            return
        base = module.EventEmitter
        self._base = base
        self._known_runs[vars(base)["_emit_run"]] = SYNC
        patcher = self.session.patcher
        patcher.replace(base, "__init__", self.session.after_init(self._guarded_bind))
        patcher.replace(base, "_call_handlers", self._call_handlers)
        # The check imported the emitter modules: their import hooks ran before the base was patched.
        # Patched before existing emitters are bound, so that each is bound with its class's mode.
        for module_name, patch in (("pyee.asyncio", self._patch_asyncio), ("pyee.executor", self._patch_executor)):
            if module_name in sys.modules:
                patch(sys.modules[module_name], True)
        if existed:
            for emitter in existing_instances(base):
                self._guarded_bind(emitter)

    def _patch_run(self, cls: type, factory: Any, queued: bool) -> None:
        if self._base is None or vars(cls).get("_emit_run") in self._known_runs:
            return  # the base class was left uninstrumented (or is not patched yet), or done already
        self.session.patcher.replace(cls, "_emit_run", factory)
        run = vars(cls)["_emit_run"]
        self._known_runs[run] = SCHEDULED
        if queued:
            self._queued_runs.add(run)
        # Emitters bound before their class was patched: their mode changes now.
        for emitter in existing_instances(cls):
            self._guarded_bind(emitter)

    def _patch_asyncio(self, module: types.ModuleType, existed: bool) -> None:
        if self._base is not None:  # else: pyee is left out, or not checked yet (it patches this then)
            self._patch_run(module.AsyncIOEventEmitter, self._asyncio_emit_run, queued=True)

    def _patch_executor(self, module: types.ModuleType, existed: bool) -> None:
        if self._base is not None:
            self._patch_run(module.ExecutorEventEmitter, self._executor_emit_run, queued=False)

    def _watch_uplift(self, module: types.ModuleType, existed: bool) -> None:
        wrappers = getattr(module, "EMIT_WRAPPERS", None)
        if isinstance(wrappers, dict):
            self._uplift[0] = wrappers

    # -- bindings -----------------------------------------------------------------------------------
    def _bind(self, emitter: Any) -> EmitterBinding | None:
        session = self.session
        if not session.buses_on or not session.active:
            return None
        cls = type(emitter)
        run = getattr(cls, "_emit_run", None)
        mode = self._known_runs.get(run, UNKNOWN)
        if mode is UNKNOWN:
            warn_once(
                f"pyee-unknown-run:{cls.__module__}.{cls.__qualname__}",
                "otel-trading instrumentation: pyee: %s.%s runs its handlers with an _emit_run otel-trading does "
                "not know, where it cannot see them complete: its events are not counted (its subscribers are)",
                cls.__module__,
                cls.__qualname__,
            )
        twisted = any(c.__name__ == "TwistedEventEmitter" and c.__module__ == "pyee.twisted" for c in cls.__mro__)
        binding = EmitterBinding(
            emitter, mode, _TWISTED_OWN_EVENTS if twisted else OWN_EVENTS, run in self._queued_runs
        )
        keep_by_id(self._by_id, emitter, binding)
        session.buses.set(emitter, binding)
        self._registry.add_bus(binding)
        return binding

    def _event(self, binding: EmitterBinding, event: Any) -> _Event | None:
        """The label of ``event``, made on first use (off the hot path)."""
        if event in binding.own:
            return None
        found = self._events.get(event)
        if found is None:
            with self._lock:
                found = self._events.get(event)
                if found is None:
                    series = self._registry.event(label_of(event))
                    found = _Event(series, self._timed, self)
                    if series.attributes.get("event_type") != mc.OVERFLOW_LABEL_VALUE:
                        # Folded values are not kept per raw event: memory stays bounded.
                        self._events[event] = found
        if len(binding.events) < 10_000:
            binding.events[event] = found
        return found

    # -- patches (factories of the replacement functions) --------------------------------------------
    def _call_handlers(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``EventEmitter._call_handlers``: counts the event published, sets up its dispatch
        for the emitter's ``_emit_run`` (see ``_asyncio_emit_run``), then calls pyee's own."""
        by_id_get = self._by_id.get
        bind = self._guarded_bind
        event_of = self._event
        current = _CURRENT
        uplift = self._uplift
        seen = _UPLIFT_SEEN
        clock = perf_counter
        first_bound = BOUNDS[0]
        session = self.session

        def _call_handlers(self: Any, event: Any, args: Any, kwargs: Any) -> bool:
            binding = by_id_get(id(self))
            if binding is None and session.active:
                binding = bind(self)
            ev: _Event | None = None
            if binding is not None and binding.mode is not UNKNOWN:
                try:
                    ev = binding.events[event]
                except KeyError:
                    ev = event_of(binding, event)
                except Exception:  # an unhashable event: pyee itself finds no handler for it
                    ev = None
            if ev is None or binding is None:
                # Not recording, one of pyee's own events (its handlers belong to no app event), or
                # an emitter whose handlers run where their end cannot be seen: published without
                # ever being processed would read as stuck events, so it is not counted at all.
                if current.dispatch is None:
                    result: bool = orig(self, event, args, kwargs)
                    return result
                return _unseen(current, orig, self, event, args, kwargs)
            try:
                try:
                    row: Row = ev.local.row
                except AttributeError:
                    row = ev.counted.row()
                wrappers = uplift[0]
                if wrappers and self in wrappers:
                    if seen.kwargs is not kwargs:
                        seen.kwargs = kwargs
                        row[PUBLISHED] += 1
                else:
                    row[PUBLISHED] += 1
            except Exception as exc:  # pragma: no cover - defensive
                report("recording a pyee event", exc)
            mode = binding.mode
            if mode is SYNC:
                start = clock()
                try:
                    handled: bool = orig(self, event, args, kwargs)
                except BaseException as exc:
                    try:
                        if isinstance(exc, Exception):
                            row[HANDLER_ERRORS] += 1
                        ev.observe(clock() - start)
                    except Exception as report_exc:  # pragma: no cover - defensive
                        report("recording a pyee handler error", report_exc)
                    raise
                if not handled:  # no handler: published only
                    return handled
                elapsed = clock() - start
                try:
                    if ev.hot.fast:
                        # ``HotEntry.observe`` inlined: the pure-Python EventEmitter row of bench/run.py
                        # is 0.13x of a bare emit slower through the call.
                        row[SUM] += elapsed
                        if elapsed < row[MIN]:
                            row[MIN] = elapsed
                        if elapsed > row[MAX]:
                            row[MAX] = elapsed
                        row[B0 if elapsed <= first_bound else B0 + bisect_left(BOUNDS, elapsed)] += 1
                        if current_context():  # a span (or another value) is current: an exemplar candidate
                            ev.hot.offer_exemplar(elapsed)
                    else:
                        ev.observe(elapsed)
                except Exception as exc:  # pragma: no cover - defensive
                    report("recording a pyee event", exc)
                return handled
            if mode is not SCHEDULED:
                # An _emit_run otel-trading does not know: published only, and no dispatch of another
                # emitter is visible to it (an override may call the wrapped asyncio one through super()).
                return _unseen(current, orig, self, event, args, kwargs)
            saved = current.dispatch
            # The handlers may schedule work: a (event, start) marker until one does, when the
            # wrapped _emit_run turns it into a _Dispatch that waits for the work to end.
            start = clock()
            marker = (ev, start)
            current.dispatch = marker
            outcome: bool | None = None  # None: pyee raised
            try:
                outcome = orig(self, event, args, kwargs)
            finally:
                dispatch = current.dispatch
                current.dispatch = saved
                if dispatch is marker:  # every handler ran inline (or there was none)
                    if outcome is not False:
                        try:
                            ev.observe(clock() - start)
                        except Exception as exc:
                            report("recording a pyee event", exc)
                elif dispatch is not None:
                    dispatch.finish()
            return bool(outcome)

        # The compiled fast path (a known emitter, an app event, a hot series); the rest goes to
        # ``_call_handlers`` above.
        return hot_path.compiled(
            "pyee.emitter_call",
            named_as(_call_handlers, orig),
            orig=orig,
            bindings=self._by_id,
            sync=SYNC,
            scheduled=SCHEDULED,
            current=current,
            end=_fast_end,
            uplift=self._uplift,
            binding_type=EmitterBinding,
            event_type=_Event,
            series_type=Series,
        )

    def _asyncio_emit_run(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``AsyncIOEventEmitter._emit_run``: pyee's own runs the handler through ``_handler``."""
        # The compiled path: while an event is recorded the handler runs there first (see _hooks.c).
        return hot_path.compiled(
            "pyee.emit_run",
            named_as(_emit_run_twin(orig, executor=False), orig),
            orig=orig,
            current=_CURRENT,
            on_error=_handler_error,
            after=_handler_result,
        )

    def _executor_emit_run(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``ExecutorEventEmitter._emit_run``: the executor runs the handler through ``_handler``."""
        return _emit_run_twin(orig, executor=True)


def _unseen(current: Any, orig: Callable[..., Any], emitter: Any, event: Any, args: Any, kwargs: Any) -> bool:
    """pyee's ``_call_handlers`` with no event dispatch visible to the emitter's ``_emit_run``."""
    saved = current.dispatch
    current.dispatch = None
    try:
        handled: bool = orig(emitter, event, args, kwargs)
        return handled
    finally:
        current.dispatch = saved


def _emit_run_twin(orig: Callable[..., Any], executor: bool) -> Callable[..., Any]:
    """pyee's ``_emit_run`` given ``_handler`` in place of the handler while an event is recorded."""
    current = _CURRENT

    def _emit_run(self: Any, f: Any, args: Any, kwargs: Any) -> None:
        dispatch = current.dispatch
        if dispatch is None:
            orig(self, f, args, kwargs)
        elif not executor:
            orig(self, _handler(f, dispatch, None), args, kwargs)
        else:
            started: list[bool] = []
            try:
                orig(self, _handler(f, dispatch, started), args, kwargs)
            except BaseException:
                if not started:  # never submitted: the event does not wait for it
                    _scheduled(current, dispatch).finish()
                raise

    return _emit_run


def _record_error(event: _Event) -> None:
    try:
        event.error()
    except Exception as exc:  # pragma: no cover - defensive
        report("recording a pyee handler error", exc)


async def _completion(coro: Any, event: _Event, dispatch: _Dispatch, ran: list[bool]) -> Any:
    """The coroutine pyee schedules in place of a handler's: awaits it, and counts its end.

    A task cancelled before its first step never runs this body; ``_never_ran`` then ends it.
    """
    ran.append(True)
    try:
        return await coro
    except CancelledError:
        raise
    except BaseException:
        _record_error(event)
        raise
    finally:
        dispatch.finish()


def _never_ran(coro: Any, dispatch: _Dispatch, ran: list[bool]) -> None:
    """``_completion``'s coroutine is gone without having started (its task was cancelled before its
    first step): the handler's coroutine is closed, as such a cancellation leaves it, and the
    handler counts as done, as a handler cancelled later does."""
    if ran:
        return
    try:
        coro.close()
        dispatch.finish()
    except Exception as exc:  # pragma: no cover - defensive
        report("recording a pyee handler", exc)


def _fast_end(event: _Event, row: Row, elapsed: float, error: BaseException | None, dispatch: Any) -> None:
    """The compiled ``_call_handlers``'s bookkeeping off its inline path: the dispatch a handler
    scheduled work in is finished, or a handler raised (sync emitters), or the row was not one."""
    try:
        if dispatch is not None:
            dispatch.finish()
            return
        if isinstance(error, Exception):
            row[HANDLER_ERRORS] += 1
        event.observe(elapsed)
    except Exception as exc:
        report("recording a pyee event", exc)


def _handler_error(dispatch: Any) -> None:
    """A handler pyee runs while ``dispatch`` is recorded raised an ``Exception``."""
    _record_error(_event_of(dispatch))


def _handler_result(result: Any, dispatch: Any) -> Any:
    """What a handler run while ``dispatch`` is recorded hands back to pyee: a coroutine is returned
    inside ``_completion`` so that the event completes when it does; a future is watched."""
    try:
        if iscoroutine(result):
            scheduled = _scheduled(_CURRENT, dispatch)
            scheduled.expect()
            ran: list[bool] = []
            wrapped: Coroutine[Any, Any, Any] = _completion(result, _event_of(dispatch), scheduled, ran)
            weakref.finalize(wrapped, _never_ran, result, scheduled, ran)
            return wrapped
        if isinstance(result, AsyncioFuture):
            _scheduled(_CURRENT, dispatch).add(result)
    except Exception as exc:  # pragma: no cover - defensive
        report("recording a pyee handler", exc)
    return result


def _handler(f: Any, dispatch: Any, started: list[bool] | None) -> Callable[..., Any]:
    """What pyee's ``_emit_run`` is given in place of the handler ``f`` while an event is recorded.

    It calls ``f`` with the same arguments and returns what ``f`` returns, except a coroutine, which
    it returns inside ``_completion`` so that the event completes when the coroutine does. A handler
    raising is counted as an error of the event and the exception goes on to pyee unchanged.
    ``started`` (a list) when it runs in an executor thread: the event waits for it to end, and it
    appends True to ``started`` when it starts.
    """
    event = _event_of(dispatch)
    if started is not None:
        waiting = _scheduled(_CURRENT, dispatch)
        waiting.expect()

        def run_in_thread(*args: Any, **kwargs: Any) -> Any:
            started.append(True)
            try:
                return f(*args, **kwargs)
            except BaseException:
                _record_error(event)
                raise
            finally:
                waiting.finish()

        return run_in_thread

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = f(*args, **kwargs)
        except Exception:
            _record_error(event)
            raise
        return _handler_result(result, dispatch)

    return run
