"""Custom breaker classes: each configured call method timed and its outcome counted."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from otel_trading.instrumentation._bindings import UNNAMED, BreakerBinding
from otel_trading.instrumentation._custom_resolve import Resolved, state_mapper
from otel_trading.instrumentation._session import Session
from otel_trading.instrumentation._support import (
    read_path,
    report,
)
from otel_trading.instrumentation.config import (
    BreakerClassSpec,
)
from otel_trading.recording import C0, C1, C2

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
        binding = session.breakers.get(breaker)
        if binding is not None and binding.name == name:
            return binding
        spec = r.spec
        assert isinstance(spec, BreakerClassSpec)
        ref = weakref.ref(breaker)
        mapper = state_mapper(spec.states, spec.where)
        bindings = session.breakers

        def read_state() -> int | None:
            b = ref()
            if b is None:
                bindings.flush()  # at collection, outside recording locks: release dead bindings
                return None
            try:
                value = read_path(b, spec.state)
            except AttributeError:
                return None
            return mapper(value)

        binding = BreakerBinding(session.registry, name, read_state, polled=True, alive=lambda: ref() is not None)
        session.breakers.set(breaker, binding)
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
        self, r: Resolved, binding: BreakerBinding, exc: BaseException | None, elapsed: float
    ) -> None:
        try:
            if exc is None:
                binding.count(C0, elapsed)
            elif r.rejected and isinstance(exc, r.rejected):
                binding.count(C2)
            elif not isinstance(exc, Exception):
                pass  # cancellation / interpreter exit says nothing about the dependency
            elif r.excluded and isinstance(exc, r.excluded):
                binding.count(C0, elapsed)
            else:
                binding.count(C1, elapsed)
            _ = binding.state
        except Exception as report_exc:
            report(f"{r.spec.where}: recording a call", report_exc)

    def _breaker_wrapper(self, r: Resolved, orig: Callable[..., Any]) -> Callable[..., Any]:
        session = self.session
        is_async = inspect.iscoroutinefunction(orig)

        def sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
            active = _IN_BREAKER.get()
            if not session.active or id(instance) in active:
                return orig(instance, *args, **kwargs)
            binding = self._breaker_before(r, instance)
            if binding is None:
                return orig(instance, *args, **kwargs)
            token = _IN_BREAKER.set(active | {id(instance)})
            start = perf_counter()
            try:
                result = orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._breaker_after(r, binding, exc, perf_counter() - start)
                raise
            finally:
                _IN_BREAKER.reset(token)
            self._breaker_after(r, binding, None, perf_counter() - start)
            return result

        async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
            active = _IN_BREAKER.get()
            if not session.active or id(instance) in active:
                return await orig(instance, *args, **kwargs)
            binding = self._breaker_before(r, instance)
            if binding is None:
                return await orig(instance, *args, **kwargs)
            token = _IN_BREAKER.set(active | {id(instance)})
            start = perf_counter()
            try:
                result = await orig(instance, *args, **kwargs)
            except BaseException as exc:
                self._breaker_after(r, binding, exc, perf_counter() - start)
                raise
            finally:
                _IN_BREAKER.reset(token)
            self._breaker_after(r, binding, None, perf_counter() - start)
            return result

        return coro if is_async else sync

    # -- buses --------------------------------------------------------------------------------------
