"""Type stubs of purgatory's compiled hot paths (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core._hook_module import RELIES_ON as RELIES_ON
from otel_trading.instrumentation._core._hook_module import Hook as Hook
from otel_trading.instrumentation._core._hook_module import configure as configure
from otel_trading.instrumentation._core._hook_module import observe as observe

class PairedEnter(Hook): ...
class PairedExit(Hook): ...

class OpenBlocks:
    """The starts of purgatory wrappers' blocks entered and not yet left."""

    def take(self, wrapper: object, /) -> float | None: ...
    def clear(self) -> None: ...
    def open(self) -> int: ...

def paired_enter(
    *,
    slow: Callable[..., Any],
    starts: dict[int, Any],
    opened: type[BaseException],
    rejected: Callable[[Any], None],
    nested: Callable[[int, float], None],
    blocks: OpenBlocks,
) -> PairedEnter: ...
def paired_exit(
    *,
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    starts: dict[int, Any],
    circuits: dict[Any, Any],
    record: Callable[[Any, float], None],
    blocks: OpenBlocks,
    circuit_type: type,
    series_type: type,
) -> PairedExit: ...
