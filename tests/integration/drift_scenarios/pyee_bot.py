"""pyee drift scenario: sync, asyncio, executor and uplifted emitters; handlers that succeed and ones that raise."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pyee
from pyee.asyncio import AsyncIOEventEmitter
from pyee.executor import ExecutorEventEmitter
from pyee.uplift import unwrap, uplift


class VenueDown(Exception):
    """What a failing handler raises."""


def run() -> tuple[list[Any], list[object]]:
    """The bot's events; returns what the bot saw, and the objects to keep alive until collection."""
    seen: list[Any] = []
    errors: list[str] = []

    def handled(*args: Any) -> None:
        seen.append(args)

    def also_handled(*args: Any) -> None:
        seen.append(("also", *args))

    def failing(*args: Any) -> None:
        raise VenueDown(f"bad {args}")

    # sync: "tick" x3 to two handlers, "fill" x1 to a handler that raises, "quiet" x1 to none.
    bus = pyee.EventEmitter()
    bus.on("tick", handled)
    bus.on("tick", also_handled)
    bus.on("fill", failing)
    for n in range(3):
        seen.append(bus.emit("tick", n))
    try:
        bus.emit("fill", 9)
    except VenueDown:
        seen.append("raised")
    seen.append(bus.emit("quiet"))

    # asyncio: "quote" x2 to a coroutine and a plain handler, "reject" x1 to a coroutine that raises.
    async def quoted(*args: Any) -> None:
        await asyncio.sleep(0)
        seen.append(("async", *args))

    async def rejected(*args: Any) -> None:
        await asyncio.sleep(0)
        raise VenueDown(f"rejected {args}")

    async def in_loop() -> AsyncIOEventEmitter:
        abus = AsyncIOEventEmitter()
        abus.on("quote", quoted)
        abus.on("quote", handled)
        abus.on("reject", rejected)
        abus.on("error", lambda exc: errors.append(str(exc)))
        seen.append(abus.emit("quote", 1))
        seen.append(abus.emit("quote", 2))
        seen.append(abus.emit("reject", 3))
        await abus.wait_for_complete()
        return abus

    abus = asyncio.run(in_loop())

    # executor: "bar" x2 to a handler, "bad" x1 to a handler that raises.
    # The emitter reports a handler's error by submitting "error" to its own executor from the failed
    # future's callback, so a shutdown that comes first makes that submit raise and the error is lost
    # (pyee's own race). The bot waits for its error handler, bounded, before shutting down.
    xbus = ExecutorEventEmitter()
    reported = threading.Event()

    def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        reported.set()

    xbus.on("bar", lambda n: None)
    xbus.on("bad", failing)
    xbus.on("error", on_error)
    seen += [xbus.emit("bar", 1), xbus.emit("bar", 2), xbus.emit("bad", 3)]
    reported.wait(timeout=10)
    xbus.shutdown(wait=True)

    # uplift: "sync" emitted once on each side, each side with one handler.
    under = pyee.EventEmitter()
    under.on("sync", handled)
    up = uplift(pyee.EventEmitter, under)
    up.on("sync", handled)
    seen += [under.emit("sync", "u"), up.emit("sync", "n")]
    unwrap(up)

    seen.append(sorted(errors))
    return [repr(x) if isinstance(x, tuple) else x for x in seen], [bus, abus, xbus, under, up]
