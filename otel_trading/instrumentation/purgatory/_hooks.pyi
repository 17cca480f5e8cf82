"""Type stubs of purgatory's compiled hot paths (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

#: The attribute names of purgatory's objects the C reads (see the top of ``_hooks.c``).
RELIES_ON: tuple[str, ...]

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    @property
    def fast_path_counts(self) -> tuple[int, int]:
        """(hits, misses): the calls served here, and those handed to the pure-Python twin."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

class PairedEnter(Hook): ...
class PairedExit(Hook): ...

class OpenBlocks:
    """The starts of purgatory wrappers' blocks entered and not yet left."""

    def take(self, wrapper: object, /) -> float | None: ...
    def clear(self) -> None: ...
    def open(self) -> int: ...

def configure(bounds: tuple[float, ...], sum: int, min: int, max: int, b0: int, /) -> None: ...
def observe(row: list[Any], value: float, /) -> bool: ...
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
