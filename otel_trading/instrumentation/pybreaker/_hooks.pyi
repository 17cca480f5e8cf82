"""Type stubs of pybreaker's compiled hot path (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core._hook_module import RELIES_ON as RELIES_ON
from otel_trading.instrumentation._core._hook_module import Hook as Hook
from otel_trading.instrumentation._core._hook_module import configure as configure
from otel_trading.instrumentation._core._hook_module import observe as observe

class LockedCall(Hook): ...

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
