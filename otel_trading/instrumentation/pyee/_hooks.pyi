"""Type stubs of pyee's compiled hot paths (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

#: The attribute names of pyee's objects the C reads (see the top of ``_hooks.c``).
RELIES_ON: tuple[str, ...]

class Hook:
    """A compiled replacement method: binds like a function, introspects as the one it replaces."""

    @property
    def fast_path_counts(self) -> tuple[int, int]:
        """(hits, misses): the calls served here, and those handed to the pure-Python twin."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any: ...

class EmitterCall(Hook): ...
class EmitRun(Hook): ...

class StandIn:
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

def configure(bounds: tuple[float, ...], sum: int, min: int, max: int, b0: int, /) -> None: ...
def observe(row: list[Any], value: float, /) -> bool: ...
def emitter_call(
    *,
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    bindings: dict[int, Any],
    sync: str,
    scheduled: str,
    uplift: list[Any],
    current: Any,
    end: Callable[..., None],
    binding_type: type,
    event_type: type,
    series_type: type,
) -> EmitterCall: ...
def emit_run(
    *,
    slow: Callable[..., Any],
    orig: Callable[..., Any],
    current: Any,
    on_error: Callable[[Any], None],
    after: Callable[[Any, Any], Any],
) -> EmitRun: ...
