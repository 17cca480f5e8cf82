"""Type stubs of what every compiled hooks module has from ``hot_path.h``, whatever its library.

Stubs only: no module of this name exists at run time. Each ``<library>/_hooks.pyi`` re-exports
these (each module has its own ``Hook`` type and its own row layout) and adds its hook kinds.
"""

from contextvars import ContextVar
from typing import Any

#: The attribute names of the library's objects the module's C reads (see the top of its ``_hooks.c``).
RELIES_ON: tuple[str, ...]

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    @property
    def fast_path_counts(self) -> tuple[int, int]:
        """(hits, misses): the calls served here, and those handed to the pure-Python twin (unusual
        calls, and those made while OpenTelemetry's context holds a span)."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

def configure(
    bounds: tuple[float, ...],
    sum: int,
    min: int,
    max: int,
    b0: int,
    context: ContextVar[Any] | None = None,
    /,
) -> None:
    """The row layout every fast path of the module writes, and the ContextVar of OpenTelemetry's
    current Context: a call made while it is not empty goes to the hook's pure-Python twin (None, or
    left out: never looked at). TypeError when ``context`` is neither."""

def observe(row: list[Any], value: float, /) -> bool: ...
