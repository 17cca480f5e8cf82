"""Type stubs of circuitbreaker's compiled hot path (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

#: The attribute names of circuitbreaker's objects the C reads (see the top of ``_hooks.c``).
RELIES_ON: tuple[str, ...]

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    @property
    def fast_path_counts(self) -> tuple[int, int]:
        """(hits, misses): the calls served here, and those handed to the pure-Python twin."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

class GuardedCall(Hook): ...

def configure(bounds: tuple[float, ...], sum: int, min: int, max: int, b0: int, /) -> None: ...
def observe(row: list[Any], value: float, /) -> bool: ...
def guarded_call(
    *,
    slow: Callable[..., Any],
    entries: dict[int, Any],
    closed: object,
    raised: Callable[..., Any],
    record: Callable[[Any, float], None],
    entry_type: type,
    series_type: type,
) -> GuardedCall: ...
