"""Type stubs of circuitbreaker's compiled hot path (``_hooks.c``)."""

from collections.abc import Callable
from typing import Any

from otel_trading.instrumentation._core._hook_module import RELIES_ON as RELIES_ON
from otel_trading.instrumentation._core._hook_module import Hook as Hook
from otel_trading.instrumentation._core._hook_module import configure as configure
from otel_trading.instrumentation._core._hook_module import observe as observe

class GuardedCall(Hook): ...

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
