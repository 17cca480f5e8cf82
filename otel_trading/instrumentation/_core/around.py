"""One wrapper for a sync or async method: a start that may decline, the call timed, an end told the outcome."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

__all__ = ["around"]

S = TypeVar("S")


def around(
    orig: Callable[..., Any],
    begin: Callable[[Any, tuple[Any, ...], dict[str, Any]], S | None],
    end: Callable[[S, BaseException | None, float], None],
) -> Callable[..., Any]:
    """``orig`` (a method; a coroutine function stays one) wrapped: ``begin(instance, args, kwargs)``
    gives what ``end`` needs, or None to call through untouched; ``end(started, exc, elapsed)`` runs
    after the call returned (``exc`` None) or raised. Neither may raise (they report their own
    failures)."""
    if inspect.iscoroutinefunction(orig):

        async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
            started = begin(instance, args, kwargs)
            if started is None:
                return await orig(instance, *args, **kwargs)
            start = perf_counter()
            try:
                result = await orig(instance, *args, **kwargs)
            except BaseException as exc:
                end(started, exc, perf_counter() - start)
                raise
            end(started, None, perf_counter() - start)
            return result

        return coro

    def sync(instance: Any, *args: Any, **kwargs: Any) -> Any:
        started = begin(instance, args, kwargs)
        if started is None:
            return orig(instance, *args, **kwargs)
        start = perf_counter()
        try:
            result = orig(instance, *args, **kwargs)
        except BaseException as exc:
            end(started, exc, perf_counter() - start)
            raise
        end(started, None, perf_counter() - start)
        return result

    return sync
