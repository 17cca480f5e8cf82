"""Trace exemplars for the rows' histograms: the SDK's filters and reservoirs, offered off the hot path.

A hot path asks one thing per duration: is OpenTelemetry's current context non-empty
(``current_context()``, a ``ContextVar.get``)? Only then does it call the series' ``exemplars``
offer, which applies the provider's exemplar filter as the SDK does (``trace_based``: a valid,
sampled current span) and offers the measurement to every reader's reservoir, in reader order, the
way the SDK's aggregations would: one ``AlignedReservoir`` slot per explicit bucket (the last offer
wins), a ``SimpleReservoir`` of ``min(20, max_size)`` for exponential buckets (uniform sampling with
the module-level ``random``, so a seeded run draws what the SDK would).
"""

from __future__ import annotations

import contextvars
import random
import threading
from bisect import bisect_left
from collections.abc import Callable
from random import randrange
from time import time_ns
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.trace import INVALID_SPAN as _INVALID_SPAN
from opentelemetry.trace import Span as _Span
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = [
    "ALWAYS_OFF",
    "ALWAYS_ON",
    "TRACE_BASED",
    "AlignedReservoir",
    "Offer",
    "SimpleReservoir",
    "current_context",
    "filter_mode",
    "offer_of",
    "otel_context_var",
]

ALWAYS_OFF, ALWAYS_ON, TRACE_BASED = "always_off", "always_on", "trace_based"


def otel_context_var() -> contextvars.ContextVar[Any] | None:
    """The ContextVar whose value is OpenTelemetry's current ``Context`` (a dict), when its runtime
    context is the contextvars one (the default); None for any other, whose context the compiled
    paths then never look at (the hooks' calls stay on the C path, span or not; the components keep
    their inline Python)."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if not isinstance(runtime, ContextVarsRuntimeContext):
        return None
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, contextvars.ContextVar) else None


def _context_getter() -> Callable[[], Any]:
    var = otel_context_var()
    # ContextVar.get itself (about 10 ns); any other runtime context goes through the API.
    return var.get if var is not None else otel_context.get_current


#: OpenTelemetry's current context; empty (falsy) when no span or other value is set.
current_context: Callable[[], Any] = _context_getter()


def filter_mode(provider: Any) -> str | None:
    """The provider's exemplar filter as one of the three SDK filters, or None for any other filter."""
    from opentelemetry.sdk.metrics import (
        AlwaysOffExemplarFilter,
        AlwaysOnExemplarFilter,
        TraceBasedExemplarFilter,
    )

    flt = getattr(getattr(provider, "_sdk_config", None), "exemplar_filter", None)
    kind = type(flt)
    if kind is TraceBasedExemplarFilter:
        return TRACE_BASED
    if kind is AlwaysOnExemplarFilter:
        return ALWAYS_ON
    if kind is AlwaysOffExemplarFilter:
        return ALWAYS_OFF
    return None


class Offer(NamedTuple):
    """One measurement offered to the reservoirs: its value, instant, and span ids (None: no span)."""

    value: float
    time_unix_nano: int
    trace_id: int | None
    span_id: int | None


def offer_of(value: float, always: bool, ctx: Any) -> Offer | None:
    """The offer the SDK's filter lets through for ``value`` recorded in context ``ctx``, else None.

    ``always``: the ``always_on`` filter (every measurement); else ``trace_based`` (a sampled current span).
    The span lookup is ``trace.get_current_span(ctx)``'s, done in place: this runs for every call made
    inside a span.
    """
    span = ctx.get(_SPAN_KEY) if ctx else None
    if span is None or span is _INVALID_SPAN or (type(span) not in _SPAN_TYPES and not _is_span(span)):
        return Offer(value, time_ns(), None, None) if always else None
    span_context = span.get_span_context()
    if not always and not span_context.trace_flags & _SAMPLED:
        return None
    return Offer(value, time_ns(), span_context.trace_id, span_context.span_id)


# Span classes seen so far: ``isinstance`` against the ``Span`` ABC costs more than the rest of the check.
_SPAN_TYPES: set[type] = set()
_SAMPLED = 0x01


def _is_span(span: Any) -> bool:
    if isinstance(span, _Span):
        _SPAN_TYPES.add(type(span))
        return True
    return False


class _Slot:
    # One ExemplarBucket: an offer without a span keeps the ids of the previous offer to the same
    # slot within the interval, as the SDK's bucket does.
    __slots__ = ("span_id", "time_unix_nano", "trace_id", "value")

    def __init__(self, offer: Offer) -> None:
        self.value, self.time_unix_nano = offer.value, offer.time_unix_nano
        self.trace_id, self.span_id = offer.trace_id, offer.span_id

    def take(self, offer: Offer) -> None:
        self.value, self.time_unix_nano = offer.value, offer.time_unix_nano
        if offer.trace_id is not None:
            self.trace_id, self.span_id = offer.trace_id, offer.span_id

    def exemplar(self, filtered: dict[str, Any] | None) -> Exemplar:
        return Exemplar(filtered, self.value, self.time_unix_nano, self.span_id, self.trace_id)


class _Reservoir:
    __slots__ = ("_lock", "_slots")

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}
        self._lock = threading.Lock()

    def _put(self, index: int, offer: Offer) -> None:
        slot = self._slots.get(index)
        if slot is None:
            self._slots[index] = _Slot(offer)
        else:
            slot.take(offer)

    def collect(self, filtered: dict[str, Any] | None) -> list[Exemplar]:
        """The exemplars since the previous collect, by slot, and a fresh interval."""
        with self._lock:
            slots, self._slots = self._slots, {}
            self._reset()
        return [slots[i].exemplar(filtered) for i in sorted(slots)]

    def _reset(self) -> None:
        pass


class AlignedReservoir(_Reservoir):
    """One slot per explicit bucket (``bounds``), the last offer of the interval wins."""

    __slots__ = ("_bounds",)

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self._bounds = bounds

    def offer(self, offer: Offer) -> None:
        with self._lock:
            self._put(bisect_left(self._bounds, offer.value), offer)


class SimpleReservoir(_Reservoir):
    """``size`` slots sampled uniformly from the interval's offers (the SDK's SimpleFixedSizeExemplarReservoir).

    ``fill``: how many offers take a slot without a draw (``size``, or ``size - 1`` on SDKs before 1.4x).
    """

    __slots__ = ("_fill", "_seen", "_size")

    def __init__(self, size: int, fill: int) -> None:
        super().__init__()
        self._size, self._fill, self._seen = size, fill, 0

    def offer(self, offer: Offer) -> None:
        if offer.value == 0.0:
            return  # the SDK's exponential aggregation returns before offering a zero
        with self._lock:
            self._seen += 1
            if self._seen <= self._fill:
                self._put(self._seen - 1, offer)
                return
            index = randrange(0, self._seen)
            if index < self._size:
                self._put(index, offer)

    def _reset(self) -> None:
        self._seen = 0


def simple_fill_offset() -> int:
    """How many fewer than ``size`` offers the installed SDK's simple reservoir places before drawing.

    SDK 1.45 fills all ``size`` slots first; 1.40 draws from the ``size``-th offer on. Found once by
    offering to a probe and seeing whether the module-level random state moved (then restored).
    """
    global _FILL_OFFSET
    if _FILL_OFFSET is None:
        from opentelemetry.sdk.metrics._internal.exemplar import SimpleFixedSizeExemplarReservoir

        probe = SimpleFixedSizeExemplarReservoir(size=2)
        state = random.getstate()
        try:
            for _ in range(2):
                probe._find_bucket_index(1.0, 0, None, None)  # type: ignore[arg-type]
            _FILL_OFFSET = 0 if random.getstate() == state else 1
        except Exception:
            _FILL_OFFSET = 0
        finally:
            random.setstate(state)
    return _FILL_OFFSET


_FILL_OFFSET: int | None = None
