"""Type stubs of the compiled hot paths (_native.c)."""

from collections.abc import Callable
from typing import Any

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

class StandIn:
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def configure(bounds: tuple[float, ...], sum: int, min: int, max: int, b0: int, /) -> None: ...
def observe(row: list[Any], value: float, /) -> bool: ...
def guarded_call(
    slow: Callable[..., Any],
    entries: dict[int, Any],
    closed: object,
    raised: Callable[..., Any],
    record: Callable[[Any, float], None],
    /,
) -> Hook: ...
def paired_enter(
    slow: Callable[..., Any],
    starts: dict[int, Any],
    opened: type[BaseException],
    rejected: Callable[[Any], None],
    nested: Callable[[int, float], None],
    blocks: OpenBlocks,
    /,
) -> Hook: ...
def paired_exit(
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    starts: dict[int, Any],
    circuits: dict[Any, Any],
    record: Callable[[Any, float], None],
    blocks: OpenBlocks,
    /,
) -> Hook: ...
def emitter_call(
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    bindings: dict[int, Any],
    sync: str,
    scheduled: str,
    uplift: list[Any],
    current: Any,
    end: Callable[..., None],
    /,
) -> Hook: ...
def emit_run(
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    current: Any,
    on_error: Callable[[Any], None],
    after: Callable[[Any, Any], Any],
    /,
) -> Hook: ...

class OpenBlocks:
    """The starts of purgatory wrappers' blocks entered and not yet left."""

    def take(self, wrapper: object, /) -> float | None: ...
    def clear(self) -> None: ...
    def open(self) -> int: ...

def locked_call(
    slow: Callable[..., Any],
    bindings: dict[Any, Any],
    open_state: type,
    after_error: Callable[[Any, float], None],
    record: Callable[[Any, float], None],
    generator: type,
    /,
) -> Hook: ...
