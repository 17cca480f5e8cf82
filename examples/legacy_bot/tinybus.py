"""The bot's own tiny event bus: topics, an asyncio queue and one delivery task.

Written with no knowledge of OpenTelemetry; otel-trading instruments it from the configuration in
``pyproject.toml`` (``[tool.otel-trading.instrument]``) without any change here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("legacy_bot.bus")

Handler = Callable[[Any], Any]


class TinyBus:
    """``subscribe(topic, handler)``, ``publish(topic, payload)``; ``run()`` delivers in order."""

    def __init__(self, name: str = "bus") -> None:
        self.name = name
        self.failures = 0
        self._handlers: dict[str, list[Handler]] = {}
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    def publish(self, topic: str, payload: Any) -> None:
        self._queue.put_nowait((topic, payload))

    async def _deliver(self, topic: str, payload: Any) -> None:
        for handler in self._handlers.get(topic, []):
            result = handler(payload)
            if inspect.isawaitable(result):
                await result

    async def run(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            try:
                await self._deliver(topic, payload)
            except Exception:
                self.failures += 1
                log.exception("a %s handler failed", topic)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until everything published so far has been delivered."""
        await self._queue.join()
