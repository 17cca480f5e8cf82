"""Custom breaker classes: each configured call method timed and its outcome counted.

A call method may be a ``def``, an ``async def``, a generator function or an async generator
function (a generator's call is timed from its first item to its end, and its outcome is how it
ends). A guarded block may also span two methods (``enter``/``exit``, a context manager): it is
timed from the end of ``enter`` to the start of ``exit``, paired by instance; a rejection raised by
``enter`` is counted as one, and the exception ``exit`` receives is the block's outcome. With
``per_call_objects`` the instances are short-lived wrappers made for each call: they share one
binding per name, and the state is read through the newest of them.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._core.arguments import read_path
from otel_trading.instrumentation._core.around import around
from otel_trading.instrumentation._core.binding import UNNAMED, BreakerBinding, bind_weakly
from otel_trading.instrumentation._core.reporting import report
from otel_trading.instrumentation._core.session import Session
from otel_trading.instrumentation.config import (
    BreakerClassSpec,
)
from otel_trading.instrumentation.custom.resolve import Resolved, state_mapper
from otel_trading.recording import FAILURES, REJECTED, SUCCESSES

__all__ = ["CustomBreakerWrappers"]

#: Breakers whose configured call method is running in this thread / task (re-entrant calls
#: such as ``call_async`` delegating to ``call`` count once).
_IN_BREAKER: ContextVar[frozenset[int]] = ContextVar("otel_trading_in_breaker", default=frozenset())


class CustomBreakerWrappers:
    """The breaker half of ``CustomClasses``: bindings and the call-method wrapper."""

    session: Session

    def _breaker_name(self, r: Resolved, breaker: Any) -> str:
        try:
            value = read_path(breaker, r.spec.name)
        except AttributeError:
            return type(breaker).__name__
        return value if isinstance(value, str) and value.strip() else UNNAMED

    def _breaker_binding(self, r: Resolved, breaker: Any) -> BreakerBinding | None:
        session = self.session
        if not session.breakers_on:
            return None
        name = self._breaker_name(r, breaker)
        if r.spec.per_call_objects:  # type: ignore[union-attr]
            return self._per_call_binding(r, breaker, name)
        binding = session.breakers.get(breaker)
        if binding is not None and binding.name == name:
            return binding
        spec = r.spec
        assert isinstance(spec, BreakerClassSpec)
        mapper = state_mapper(spec.states, spec.where)

        def state_of(b: Any) -> int | None:
            try:
                value = read_path(b, spec.state)
            except AttributeError:
                return None
            return mapper(value)

        return bind_weakly(session.registry, session.breakers, breaker, name, state_of, polled=True)

    def _per_call_binding(self, r: Resolved, breaker: Any, name: str) -> BreakerBinding:
        """One binding per (entry, name) for the session; the state is read through the newest instance."""
        table: dict[tuple[str, str], tuple[BreakerBinding, list[Any]]] = self.__dict__.setdefault(
            "_per_call_bindings", {}
        )
        key = (r.spec.where, name)
        found = table.get(key)
        if found is not None:
            found[1][0] = weakref.ref(breaker)
            return found[0]
        spec = r.spec
        assert isinstance(spec, BreakerClassSpec)
        newest: list[Any] = [weakref.ref(breaker)]
        mapper = state_mapper(spec.states, spec.where)

        def read_state() -> int | None:
            b = newest[0]()
            if b is None:
                return None  # the binding keeps the last state it read
            try:
                value = read_path(b, spec.state)
            except AttributeError:
                return None
            return mapper(value)

        binding = BreakerBinding(self.session.registry, name, read_state, polled=True)
        table[key] = (binding, newest)
        return binding

    def _breaker_before(self, r: Resolved, breaker: Any) -> BreakerBinding | None:
        try:
            binding = self._breaker_binding(r, breaker)
            if binding is not None:
                _ = binding.state  # a transition since the last read (e.g. a timeout) shows up now
            return binding
        except Exception as exc:
            report(f"{r.spec.where}: preparing a call", exc)
            return None

    def _breaker_after(
        self, r: Resolved, binding: BreakerBinding, exc: BaseException | type | None, elapsed: float
    ) -> None:
        """Count one outcome: ``exc`` is the exception (or only its type, as ``__exit__`` may get it)."""
        try:
            kind = exc if isinstance(exc, type) or exc is None else type(exc)
            if kind is None:
                binding.count(SUCCESSES, elapsed)
            elif r.rejected and issubclass(kind, r.rejected):
                binding.count(REJECTED)
            elif not issubclass(kind, Exception):
                pass  # cancellation / interpreter exit says nothing about the dependency
            elif r.excluded and issubclass(kind, r.excluded):
                binding.count(SUCCESSES, elapsed)
            else:
                binding.count(FAILURES, elapsed)
            _ = binding.state
        except Exception as report_exc:
            report(f"{r.spec.where}: recording a call", report_exc)

    def _breaker_wrapper_for(self, r: Resolved, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """The wrapper factory for one configured method: a call, or one end of a guarded block."""
        spec = r.spec
        assert isinstance(spec, BreakerClassSpec)

        def factory(orig: Callable[..., Any]) -> Callable[..., Any]:
            if method in spec.enters:
                return self._enter_wrapper(r, orig)
            if method in spec.exits:
                return self._exit_wrapper(r, orig)
            return self._breaker_wrapper(r, orig)

        return factory

    def _block_starts(self) -> dict[int, list[float]]:
        """id(instance) -> starts of its open guarded blocks (innermost last)."""
        starts: dict[int, list[float]] = self.__dict__.setdefault("_open_blocks", {})
        return starts

    def _enter_wrapper(self, r: Resolved, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        starts = self._block_starts()

        def begin(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, BreakerBinding] | None:
            binding = self._breaker_before(r, instance) if session.active else None
            return None if binding is None else (instance, binding)

        def end(started: tuple[Any, BreakerBinding], exc: BaseException | None, elapsed: float) -> None:
            instance, binding = started
            if exc is None:  # the block starts once entered
                starts.setdefault(id(instance), []).append(perf_counter())
            elif r.rejected and isinstance(exc, r.rejected):
                self._breaker_after(r, binding, exc, 0.0)

        return around(orig, begin, end)

    def _exit_wrapper(self, r: Resolved, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        starts = self._block_starts()

        def begin(instance: Any, args: tuple[Any, ...]) -> tuple[float, Any] | None:
            """(the block's start, the exception it ended with) when its start was seen."""
            try:
                stack = starts.get(id(instance))
                if not stack:
                    return None
                start = stack.pop()
                if not stack:
                    starts.pop(id(instance), None)
                exc = args[1] if len(args) > 1 and args[1] is not None else (args[0] if args else None)
                return start, exc
            except Exception as exc:  # pragma: no cover - defensive
                report(f"{r.spec.where}: pairing a guarded block", exc)
                return None

        def end(instance: Any, begun: tuple[float, Any], ended: float) -> None:
            binding = self._breaker_before(r, instance)
            if binding is not None:
                self._breaker_after(r, binding, begun[1], ended - begun[0])

        def sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
            if not session.active:
                return orig(instance, *args, **kwargs)
            ended = perf_counter()
            begun = begin(instance, args)
            try:
                return orig(instance, *args, **kwargs)
            finally:
                if begun is not None:
                    end(instance, begun, ended)

        async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
            if not session.active:
                return await orig(instance, *args, **kwargs)
            ended = perf_counter()
            begun = begin(instance, args)
            try:
                return await orig(instance, *args, **kwargs)
            finally:
                if begun is not None:
                    end(instance, begun, ended)

        return coro if inspect.iscoroutinefunction(orig) else sync

    def _breaker_wrapper(self, r: Resolved, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        if inspect.isgeneratorfunction(orig) or inspect.isasyncgenfunction(orig):
            # Timed from its first item to its end, its outcome how it ends. No nesting guard: a
            # context token cannot be reset across the generator's suspensions.
            return around(
                orig,
                lambda instance, args, kwargs: self._breaker_before(r, instance) if session.active else None,
                lambda binding, exc, elapsed: self._breaker_after(r, binding, exc, elapsed),
            )

        def begin(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[BreakerBinding, Any] | None:
            # A call method calling another one of the same breaker is counted once, outermost.
            active = _IN_BREAKER.get()
            if not session.active or id(instance) in active:
                return None
            binding = self._breaker_before(r, instance)
            if binding is None:
                return None
            return binding, _IN_BREAKER.set(active | {id(instance)})

        def end(started: tuple[BreakerBinding, Any], exc: BaseException | None, elapsed: float) -> None:
            binding, token = started
            _IN_BREAKER.reset(token)
            self._breaker_after(r, binding, exc, elapsed)

        return around(orig, begin, end)

    # -- buses --------------------------------------------------------------------------------------
