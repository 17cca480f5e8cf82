"""Type stubs of pybreaker's compiled hot path (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

#: The attribute names of pybreaker's objects the C reads (see the top of ``_hooks.c``).
RELIES_ON: tuple[str, ...]

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    @property
    def fast_path_counts(self) -> tuple[int, int]:
        """(hits, misses): the calls served here, and those handed to the pure-Python twin."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

class LockedCall(Hook): ...

def configure(bounds: tuple[float, ...], sum: int, min: int, max: int, b0: int, /) -> None: ...
def observe(row: list[Any], value: float, /) -> bool: ...
def locked_call(
    *,
    slow: Callable[..., Any],
    bindings: dict[Any, Any],
    open_state: type,
    after_error: Callable[[Any, float], None],
    record: Callable[[Any, float], None],
    generator: type,
    binding_type: type,
    series_type: type,
) -> LockedCall: ...
