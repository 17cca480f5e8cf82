"""Type stubs of pyee's compiled hot paths (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core._hook_module import RELIES_ON as RELIES_ON
from otel_trading.instrumentation._core._hook_module import Hook as Hook
from otel_trading.instrumentation._core._hook_module import configure as configure
from otel_trading.instrumentation._core._hook_module import observe as observe

class EmitterCall(Hook): ...
class EmitRun(Hook): ...

class StandIn:
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

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
