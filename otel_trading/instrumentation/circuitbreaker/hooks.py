"""circuitbreaker (fabfuel, 2.x): all breaker metrics, read from the library's own decision points.

``circuitbreaker`` guards a call with ``with self:`` inside four entry methods that its decorators
(``@circuit``, ``@CircuitBreaker(...)``, subclasses) call; ``__exit__`` decides the outcome through
the breaker's ``expected_exception`` predicate. What is patched, and what each patch records:

==========================================  ======================================================
``CircuitBreaker.call``, ``call_async``      replaced by our own ``with self:`` around the call plus
                                            the recording (no extra frame): the guarded block is
                                            timed; a normal end is a success
``call_generator``, ``call_async_generator``  wrapped: timed from the first ``next()`` to the end
``CircuitBreaker._CircuitBreaker__call_     the library counts a failure: the exception passing
failed``                                    through the entry method is a failure, any other one
                                            (excluded by ``expected_exception``) a success, as the
                                            library itself resets the breaker on it
``CircuitBreakerError.__init__``            a rejection of the breaker it is given, however it is
                                            raised (the decorators raise it before ``call`` runs)
``CircuitBreaker.__init__``, ``decorate``   bind the breaker under its ``name`` (``decorate`` names
                                            an unnamed breaker after the function)
==========================================  ======================================================

The replacements are installed only when the release has everything ``reliance.RELIANCE`` declares;
otherwise circuitbreaker is left out whole, with one warning. The state gauge
reads the library's ``state`` property (``closed``/``open``/``half_open`` -> 0/1/2, the half-open
state being the library's own timer-based reading); transitions are the changes between
successive readings, taken before and after every call that does not start closed, after every
failure and rejection, and at every collection. Breakers are found when the library is imported,
created or decorated later (``CircuitBreakerMonitor`` is left as it is), or on their first call.
Calls served by a ``fallback_function`` while the breaker is open raise nothing and are not
counted; a bare ``with breaker:`` block outside the entry methods is not counted either.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.around import around
from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN, BreakerBinding, HotEntry
from otel_trading.instrumentation._core.hot_path import named_as
from otel_trading.instrumentation._core.identity import keep_by_id
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.instrumentation.circuitbreaker.reliance import RELIANCE
from otel_trading.recording import FAILURES, REJECTED, SUCCESSES, Series

__all__ = ["CircuitbreakerBreakers"]

_STATES = {"closed": CLOSED, "open": OPEN, "half_open": HALF_OPEN}


class _Verdict(threading.local):
    """The failure the library counted last in this thread: its breaker and its exception."""

    breaker: int = 0
    exc: BaseException | None = None


_VERDICT = _Verdict()


def _state_code(value: Any) -> int | None:
    return _STATES.get(value) if isinstance(value, str) else None


def _record_success(entry: HotEntry[BreakerBinding], elapsed: float) -> None:
    """A success the compiled path could not record itself."""
    try:
        entry.observe(elapsed)
    except Exception as exc:
        report("recording a circuitbreaker call", exc)


class CircuitbreakerBreakers:
    """Instruments ``circuitbreaker.CircuitBreaker`` and its subclasses."""

    target = "circuitbreaker"

    def __init__(self, session: Session) -> None:
        self.session = session
        self._guarded_bind = session.guarded("binding a circuitbreaker breaker", self._bind)
        # id(breaker) -> entry: the hot path's one lookup; emptied by uninstrument().
        self._by_id: dict[int, HotEntry] = {}
        session.fast_lookups.append(self._by_id)
        self._breaker_cls: type | None = None
        self._closed: Any = "closed"

    def start(self) -> None:
        self.session.on_import("circuitbreaker", self._patch, self.target)

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        if not RELIANCE.holds():
            return
        cls = module.CircuitBreaker
        error = module.CircuitBreakerError
        self._breaker_cls = cls
        self._closed = module.STATE_CLOSED
        patcher = self.session.patcher
        patcher.replace(cls, "__init__", self.session.after_init(self._bind_named))
        patcher.replace(cls, "decorate", self._decorate)
        patcher.replace(cls, "_CircuitBreaker__call_failed", self._call_failed)
        patcher.replace(error, "__init__", self._rejected)
        replacements: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
            "call": self._call,
            "call_generator": self._guarded_generator,
            "call_async": self._call_async,
            "call_async_generator": self._guarded_generator,
        }
        for name, factory in replacements.items():
            patcher.replace(cls, name, factory)
        if existed:
            for breaker in existing_instances(cls):
                if getattr(breaker, "_name", None) is not None:
                    self._guarded_bind(breaker)

    # -- bindings -----------------------------------------------------------------------------------
    def _bind(self, breaker: Any) -> HotEntry[BreakerBinding] | None:
        binding = self.session.bind_breaker(breaker, breaker._name, lambda b: _state_code(b.state), polled=True)
        if binding is None:
            return None
        entry = HotEntry(binding, SUCCESSES)
        keep_by_id(self._by_id, breaker, entry)
        return entry

    def _bind_named(self, breaker: Any) -> None:
        if getattr(breaker, "_name", None) is not None:  # else: decorate() names it
            self._guarded_bind(breaker)

    def entry_of(self, breaker: Any) -> HotEntry[BreakerBinding] | None:
        """The breaker's entry, (re)bound if it is new or was renamed; None when not recording."""
        entry = self._by_id.get(id(breaker))
        if entry is None or entry.binding.raw_name is not getattr(breaker, "_name", None):
            entry = self._guarded_bind(breaker)
        return entry

    def _observe(self, breaker: Any, binding: BreakerBinding) -> None:
        code = _state_code(breaker.state)
        if code is not None:
            binding.observe_state(code)

    def _before(self, breaker: Any) -> HotEntry[BreakerBinding] | None:
        """An entry method's start off the fast path: bind, and read the state it starts in."""
        try:
            if not self.session.active:
                return None
            entry = self.entry_of(breaker)
            if entry is not None:
                self._observe(breaker, entry.binding)
            return entry
        except Exception as exc:
            report("preparing a circuitbreaker call", exc)
            return None

    def _succeeded(self, breaker: Any, entry: HotEntry[BreakerBinding], start: float, observe: bool) -> None:
        try:
            entry.binding.count(SUCCESSES, perf_counter() - start)
            if observe:
                self._observe(breaker, entry.binding)
        except Exception as exc:
            report("recording a circuitbreaker call", exc)

    def _raised(
        self, breaker: Any, entry: HotEntry[BreakerBinding], start: float, exc: BaseException, closed: bool = False
    ) -> None:
        """The guarded block raised: a failure if the library counted one for this exception, else
        a success (the library reset the breaker on it). ``closed``: the call took the fast path,
        so it started closed (a reading the fast path does not make)."""
        try:
            if closed:
                entry.binding.observe_state(CLOSED)
            verdict = _VERDICT
            failed = verdict.breaker == id(breaker) and verdict.exc is exc
            if failed:
                verdict.breaker, verdict.exc = 0, None
            entry.binding.count(FAILURES if failed else SUCCESSES, perf_counter() - start)
            self._observe(breaker, entry.binding)
        except Exception as report_exc:
            report("recording a circuitbreaker error", report_exc)

    # -- patches (factories of the replacement functions) ---------------------------------------------
    def _decorate(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def decorate(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            result = orig(breaker, *args, **kwargs)
            if session.active:
                try:
                    self.entry_of(breaker)  # decorate() names an unnamed breaker
                except Exception as exc:  # pragma: no cover - defensive
                    report("binding a circuitbreaker breaker", exc)
            return result

        return decorate

    def _call_failed(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def _CircuitBreaker__call_failed(breaker: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = _VERDICT
            verdict.breaker = id(breaker)
            # __exit__ counts a failure while the block's exception is being handled in this
            # thread: that is the exception it judged. The breaker's _last_failure is shared, and
            # other threads' calls overwrite or clear it between __exit__'s two statements.
            handled = sys.exc_info()[1]
            verdict.exc = handled if handled is not None else getattr(breaker, "_last_failure", None)
            return orig(breaker, *args, **kwargs)

        return _CircuitBreaker__call_failed

    def _rejected(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def __init__(error: Any, *args: Any, **kwargs: Any) -> None:
            orig(error, *args, **kwargs)
            circuit_breaker = args[0] if args else kwargs.get("circuit_breaker")
            cls = self._breaker_cls
            if session.active and cls is not None and isinstance(circuit_breaker, cls):
                try:
                    entry = self.entry_of(circuit_breaker)
                    if entry is not None:
                        self._observe(circuit_breaker, entry.binding)
                        entry.binding.count(REJECTED)
                except Exception as exc:
                    report("recording a circuitbreaker rejection", exc)

        return __init__

    def _prepare(self, breaker: Any) -> tuple[HotEntry[BreakerBinding] | None, bool]:
        """An entry method's start: the breaker's entry (None: not recording) and whether the call
        takes the fast path (bound, and starting closed: a reading the fast path does not make)."""
        entry = self._by_id.get(id(breaker))
        try:
            if entry is not None and breaker._state is self._closed:
                return entry, True
        except AttributeError:
            pass
        return self._before(breaker), False

    def _call(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Replaces ``CircuitBreaker.call``: ``with self:`` around ``func``, timed and counted.

        The compiled fast path (a bound breaker that starts closed and succeeds) times the block
        and bumps one histogram; it hands every other call to the twin below.
        """
        by_id_get = self._by_id.get
        closed = self._closed
        prepare = self._prepare
        raised = self._raised
        succeeded = self._succeeded
        clock = perf_counter

        def call(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry = by_id_get(id(self))
            try:  # ``_prepare`` inlined for the fast path (a bound breaker starting closed)
                fast = entry is not None and self._state is closed
            except AttributeError:
                fast = False
            if not fast:
                entry, fast = prepare(self)
            if entry is None:
                with self:
                    return func(*args, **kwargs)
            start = clock()
            result = None  # what the library's ``with self: return ...`` gives when __exit__ suppresses
            try:
                with self:
                    result = func(*args, **kwargs)
            except BaseException as exc:
                raised(self, entry, start, exc, fast)
                raise
            if not fast:
                succeeded(self, entry, start, True)
                return result
            try:  # a call that started closed and succeeded ends closed: nothing to observe
                entry.observe(clock() - start)
            except Exception as exc:  # pragma: no cover - defensive
                report("recording a circuitbreaker call", exc)
            return result

        # The compiled fast path; it hands every other call to ``call`` above.
        return hot_path.compiled(
            "circuitbreaker.guarded_call",
            named_as(call, orig),
            entries=self._by_id,
            raised=raised,
            record=_record_success,
            closed=self._closed,
            entry_type=HotEntry,
            series_type=Series,
        )

    def _call_async(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        async def call_async(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            entry, fast = hooks._prepare(self)
            if entry is None:
                with self:
                    return await func(*args, **kwargs)
            start = perf_counter()
            result = None
            try:
                with self:
                    result = await func(*args, **kwargs)
            except BaseException as exc:
                hooks._raised(self, entry, start, exc, fast)
                raise
            hooks._succeeded(self, entry, start, not fast)
            return result

        return call_async

    def _guarded_generator(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``call_generator``/``call_async_generator``: the library's own guards the block, timed
        from the first item to the end."""

        def begin(breaker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, float] | None:
            entry = self._before(breaker)
            return None if entry is None else (breaker, entry, perf_counter())

        def end(started: tuple[Any, Any, float], exc: BaseException | None, elapsed: float) -> None:
            breaker, entry, start = started
            if exc is None:
                self._succeeded(breaker, entry, start, True)
            else:
                self._raised(breaker, entry, start, exc)

        return around(orig, begin, end)
