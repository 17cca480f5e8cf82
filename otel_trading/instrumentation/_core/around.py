"""One wrapper for a method of any kind: a start that may decline, the call timed, an end told the outcome."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Generator
from time import perf_counter
from typing import Any, TypeVar

__all__ = ["around"]

S = TypeVar("S")
Begin = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
End = Callable[[Any, BaseException | None, float], None]


def around(orig: Callable[..., Any], begin: Begin, end: End) -> Callable[..., Any]:
    """``orig`` (a method: plain, coroutine, generator or async generator function, and it stays
    one) wrapped: ``begin(instance, args, kwargs)`` gives what ``end`` needs, or None to call
    through untouched; ``end(started, exc, elapsed)`` runs after the call returned (``exc`` None) or
    raised. A generator is timed from its first item to its end (an async generator forwards
    iteration only: ``async for`` is all it supports). Neither ``begin`` nor ``end`` may raise."""
    if inspect.isasyncgenfunction(orig):
        return _async_generator(orig, begin, end)
    if inspect.isgeneratorfunction(orig):
        return _generator(orig, begin, end)
    if inspect.iscoroutinefunction(orig):
        return _coroutine(orig, begin, end)

    def call(instance: Any, *args: Any, **kwargs: Any) -> Any:
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

    return call


def _coroutine(orig: Callable[..., Any], begin: Begin, end: End) -> Callable[..., Any]:
    async def coro(instance: Any, *args: Any, **kwargs: Any) -> Any:
        started = begin(instance, args, kwargs)
        if started is None:
            return await orig(instance, *args, **kwargs)
        start = perf_counter()
        result = None
        try:
            result = await orig(instance, *args, **kwargs)
        except BaseException as exc:
            end(started, exc, perf_counter() - start)
            raise
        else:
            end(started, None, perf_counter() - start)
        return result

    return coro


def _generator(orig: Callable[..., Any], begin: Begin, end: End) -> Callable[..., Any]:
    def gen(instance: Any, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        started = begin(instance, args, kwargs)
        if started is None:
            return (yield from orig(instance, *args, **kwargs))
        start = perf_counter()
        try:
            result = yield from orig(instance, *args, **kwargs)
        except BaseException as exc:
            end(started, exc, perf_counter() - start)
            raise
        end(started, None, perf_counter() - start)
        return result

    return gen


def _async_generator(orig: Callable[..., Any], begin: Begin, end: End) -> Callable[..., Any]:
    async def agen(instance: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        started = begin(instance, args, kwargs)
        if started is None:
            async for item in orig(instance, *args, **kwargs):
                yield item
            return
        start = perf_counter()
        try:
            async for item in orig(instance, *args, **kwargs):
                yield item
        except BaseException as exc:
            end(started, exc, perf_counter() - start)
            raise
        end(started, None, perf_counter() - start)

    return agen
