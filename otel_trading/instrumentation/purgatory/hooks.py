"""purgatory (3.x): breaker metrics for its sync and async breakers, decorators and context managers alike.

purgatory keeps each circuit's state in a ``Context`` (one per circuit name in its in-memory
repository, one per call with Redis) and guards a block with a short-lived wrapper object that
``get_breaker()`` builds for each call: ``SyncCircuitBreaker`` (``with``) or
``AsyncCircuitBreaker`` (``async with``). The decorators do the same around the function. What is
patched, and what each patch records:

============================================  ====================================================
``SyncCircuitBreaker.__enter__/__exit__``,    entering: replaced by our own entering of the
``AsyncCircuitBreaker.__aenter__/__aexit__``  context plus the start; exiting: wrapped. The whole
                                              guarded block is timed (enter to exit, paired by
                                              wrapper object); ``OpenedState`` raised on entry is
                                              a rejection
``ClosedState/HalfOpenedState/OpenedState     the library decided the exception is a failure (its
.handle_exception``                           exclude list, types and predicates, did not exclude
                                              it): a failure; any other exit is a success
``Context.set_state``                         a transition (``closed``/``opened``/``half-opened``
                                              -> 0/1/2), and the state the gauge reports
``Context.__init__``                          the circuit's state as created or loaded from storage
============================================  ====================================================

Series are per circuit name: breakers of one name share them, whatever wrapper object or
``Context`` carries the call; the state gauge reports the last state this process saw for that
name (with Redis, changes made by other processes show up at this process's next call). A block
entered before instrumentation is not counted. The patches are installed only when the release has
everything ``reliance.RELIANCE`` declares; otherwise purgatory is left out whole, with one warning.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._core import hot_path
from otel_trading.instrumentation._core.binding import CLOSED, HALF_OPEN, OPEN, BreakerBinding, HotEntry, breaker_label
from otel_trading.instrumentation._core.hot_path import named_as
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session, existing_instances
from otel_trading.instrumentation.purgatory.reliance import RELIANCE
from otel_trading.recording import FAILURES, REJECTED, SUCCESSES, Series
from otel_trading.recording.rows import fork_safe

__all__ = ["PurgatoryBreakers"]

_STATES = {"closed": CLOSED, "opened": OPEN, "half-opened": HALF_OPEN}


def _code(state: Any) -> int | None:
    name = getattr(state, "name", None)
    return _STATES.get(name) if isinstance(name, str) else None


#: (id(context), id(exc)) -> exc for each failure the library decided and no exit has read yet
#: (keyed by both: concurrent async blocks of one circuit may be between the two).
_FAILURES: dict[tuple[int, int], BaseException] = {}


class _Circuit(HotEntry[BreakerBinding]):
    """One circuit name: its binding, its rows for timed successes, and the last state seen."""

    __slots__ = ("state",)

    def __init__(self, binding: BreakerBinding) -> None:
        super().__init__(binding, SUCCESSES)
        self.state = CLOSED


class PurgatoryBreakers:
    """Instruments purgatory's breakers."""

    target = "purgatory"

    def __init__(self, session: Session) -> None:
        self.session = session
        # circuit name -> _Circuit; emptied by uninstrument().
        self._circuits: dict[Any, _Circuit] = {}
        session.fast_lookups.append(self._circuits)
        # id(wrapper) -> the start of its block (a list when one wrapper is inside several blocks).
        self._starts: dict[int, Any] = {}
        session.fast_lookups.append(self._starts)
        self._lock = threading.Lock()
        fork_safe(self)
        # The compiled __enter__ keeps most starts here instead (with a reference to the wrapper);
        # the exits, compiled or not, look here first. None on the pure-Python path.
        hooks = hot_path.load("purgatory")
        self._blocks: Any = hooks.OpenBlocks() if hooks is not None else None
        if self._blocks is not None:
            session.on_stop.append(self._blocks.clear)

    def start(self) -> None:
        self.session.on_import("purgatory", self._patch, self.target)

    # -- patching -----------------------------------------------------------------------------------
    def _patch(self, module: types.ModuleType, existed: bool) -> None:
        import sys

        if not RELIANCE.holds():
            return
        model = sys.modules["purgatory.domain.model"]
        sync_cls = sys.modules["purgatory.service._sync.circuitbreaker"].SyncCircuitBreaker
        async_cls = sys.modules["purgatory.service._async.circuitbreaker"].AsyncCircuitBreaker
        self._opened: type[BaseException] = model.OpenedState
        states = (model.ClosedState, model.HalfOpenedState, model.OpenedState)
        patches: list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
            (sync_cls, "__enter__", self._enter),
            (sync_cls, "__exit__", self._exit),
            (async_cls, "__aenter__", self._aenter),
            (async_cls, "__aexit__", self._aexit),
        ]
        patcher = self.session.patcher
        patcher.replace(model.Context, "__init__", self.session.after_init(self._created))
        patcher.replace(model.Context, "set_state", self._set_state)
        for state in states:
            patcher.replace(state, "handle_exception", self._handle_exception)
        for owner, name, factory in patches:
            patcher.replace(owner, name, factory)
        if existed:
            for context in existing_instances(model.Context):
                self._note(context, _code(getattr(context, "_state", None)))

    # -- circuits -----------------------------------------------------------------------------------
    def _circuit(self, name: Any) -> _Circuit | None:
        """The circuit of ``name``, made on first use; None when not recording."""
        circuit = self._circuits.get(name)
        if circuit is not None:
            return circuit
        session = self.session
        if not session.breakers_on or not session.active:
            return None
        with self._lock:
            circuit = self._circuits.get(name)
            if circuit is None:
                holder: list[_Circuit] = []

                def read_state() -> int | None:
                    return holder[0].state if holder else None

                binding = BreakerBinding(session.registry, breaker_label(name), read_state, raw_name=name)
                circuit = _Circuit(binding)
                holder.append(circuit)
                self._circuits[name] = circuit
        return circuit

    def _created(self, context: Any) -> None:
        self._note(context, _code(getattr(context, "_state", None)))

    def _note(self, context: Any, code: int | None) -> None:
        """The state ``context`` was created or loaded in (no transition: this process made none)."""
        try:
            circuit = self._circuit(context.name)
            if circuit is not None and code is not None:
                circuit.state = code
        except Exception as exc:
            report("reading a purgatory circuit's state", exc)

    # -- recording -----------------------------------------------------------------------------------
    def _nested(self, key: int, start: float) -> None:
        """The same wrapper object entered again before its exit (rare): keep every start."""
        with self._lock:
            got = self._starts.get(key)
            if got is None:
                self._starts[key] = start
            elif got.__class__ is list:
                got.append(start)
            else:
                self._starts[key] = [got, start]

    def _unnest(self, key: int, starts: list[float]) -> float:
        """The start of the innermost of a wrapper object's open blocks; the others stay."""
        with self._lock:
            start, rest = starts[-1], starts[:-1]
            if rest:
                self._starts[key] = rest if len(rest) > 1 else rest[0]
        return start

    def _rejected(self, breaker: Any) -> None:
        if not self.session.active:
            return
        try:
            circuit = self._circuit(breaker.context.name)
            if circuit is not None:
                circuit.binding.count(REJECTED)
        except Exception as exc:
            report("recording a purgatory rejection", exc)

    def _ended(self, context: Any, exc: BaseException | None, start: float, end: float) -> None:
        try:
            circuit = self._circuit(context.name)
            if circuit is None:
                return
            elapsed = end - start
            if exc is None:
                circuit.observe(elapsed)
                return
            failed = _FAILURES.pop((id(context), id(exc)), None) is exc
            circuit.binding.count(FAILURES if failed else SUCCESSES, elapsed)
        except Exception as report_exc:
            report("recording a purgatory call", report_exc)

    # -- patches (factories of the replacement functions) --------------------------------------------
    def _set_state(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session

        def set_state(context: Any, *args: Any, **kwargs: Any) -> Any:
            old = _code(getattr(context, "_state", None))
            result = orig(context, *args, **kwargs)
            if session.active:
                try:
                    new = _code(getattr(context, "_state", None))
                    circuit = self._circuit(context.name)
                    if circuit is not None and new is not None:
                        circuit.state = new
                        if old is not None and old != new:
                            circuit.binding.transition(old, new)
                except Exception as exc:
                    report("recording a purgatory transition", exc)
            return result

        return set_state

    def _handle_exception(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def handle_exception(state: Any, context: Any, exc: BaseException, *args: Any, **kwargs: Any) -> Any:
            # Called only when the context decided that ``exc`` is a failure.
            _FAILURES[(id(context), id(exc))] = exc
            return orig(state, context, exc, *args, **kwargs)

        return handle_exception

    def _patch_parts(self) -> tuple[Any, ...]:
        return (
            self._opened,
            self._rejected,
            self._starts.setdefault,
            self._starts.pop,
            self._nested,
            self._unnest,
            self._circuits.get,
            self._ended,
            self._record_success,
        )

    def _record_success(self, circuit: _Circuit, elapsed: float) -> None:
        """Off the inline path: a success on a series that is not bound to its rows (or, from the
        compiled path, on a row it could not update)."""
        try:
            circuit.observe(elapsed)
        except Exception as exc:
            report("recording a purgatory call", exc)

    def _enter(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Replaces ``SyncCircuitBreaker.__enter__``: enters the context, noting a rejection, then the start."""
        opened, rejected, setdefault, _, nested, _, _, _, _ = self._patch_parts()
        clock = perf_counter

        def __enter__(self: Any) -> Any:
            try:
                self.context.__enter__()
            except opened:
                rejected(self)
                raise
            start = clock()
            if setdefault(id(self), start) is not start:
                nested(id(self), start)
            return self

        if self._blocks is None:  # set up for the pure-Python paths
            return __enter__
        # The compiled twin of ``__enter__`` above (which it hands unusual calls to).
        return hot_path.compiled(
            "purgatory.paired_enter",
            named_as(__enter__, orig),
            starts=self._starts,
            blocks=self._blocks,
            opened=opened,
            rejected=rejected,
            nested=nested,
        )

    def _exit(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``SyncCircuitBreaker.__exit__``: the block ends when it is called; it is counted once
        the library's exit (which decides a failure) has run.

        The inline path is a success of a known circuit on a series bound to its rows: one
        histogram update (a ``CountedThreadRows`` row: the success is its histogram count).
        """
        _, _, _, pop, _, _, circuits_get, _, record_success = self._patch_parts()
        take = self._blocks.take if self._blocks is not None else None
        clock = perf_counter
        block_end = self._block_end

        def __exit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
            end = clock()
            start = take(self) if take is not None else None
            if start is None:
                start = pop(id(self), None)
            try:
                return orig(self, exc_type, exc, tb)
            finally:
                try:
                    circuit = circuits_get(self.context.name) if exc is None else None
                    if circuit is not None and start.__class__ is float:
                        circuit.observe(end - start)
                    else:  # a failure, a nested or unbound block, or one entered before instrumentation
                        block_end(self, start, exc, end)
                except Exception as report_exc:  # pragma: no cover - defensive
                    report("recording a purgatory call", report_exc)

        if self._blocks is None:  # set up for the pure-Python paths
            return __exit__
        # The compiled fast path: a success of a known circuit; the rest goes to ``__exit__`` above.
        return hot_path.compiled(
            "purgatory.paired_exit",
            named_as(__exit__, orig),
            orig=orig,
            starts=self._starts,
            circuits=self._circuits,
            record=record_success,
            blocks=self._blocks,
            circuit_type=_Circuit,
            series_type=Series,
        )

    def _aenter(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Replaces ``AsyncCircuitBreaker.__aenter__``: the sync ``__enter__`` replacement's body, awaited."""
        enter = self._enter(orig)

        async def __aenter__(self: Any) -> Any:
            return enter(self)

        return __aenter__

    def _aexit(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps ``AsyncCircuitBreaker.__aexit__``, as ``_exit`` does the sync one (off the fast path)."""
        hooks = self

        async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
            end = perf_counter()
            start = hooks._block_start(self)
            try:
                return await orig(self, exc_type, exc, tb)
            finally:
                hooks._block_end(self, start, exc, end)

        return __aexit__

    def _block_start(self, wrapper: Any) -> Any:
        """The start of ``wrapper``'s block: a float, a list when the wrapper is in several blocks,
        None when it was entered before instrumentation."""
        start = self._blocks.take(wrapper) if self._blocks is not None else None
        return self._starts.pop(id(wrapper), None) if start is None else start

    def _block_end(self, wrapper: Any, start: Any, exc: BaseException | None, end: float) -> None:
        """Record a block's end, ``exc`` being how the library's exit saw it end."""
        try:
            if start is None:  # entered before instrumentation: only forget the library's verdict
                if exc is not None:
                    _FAILURES.pop((id(wrapper.context), id(exc)), None)
                return
            if start.__class__ is list:
                start = self._unnest(id(wrapper), start)
            self._ended(wrapper.context, exc, start, end)
        except Exception as report_exc:  # pragma: no cover - defensive
            report("recording a purgatory call", report_exc)
