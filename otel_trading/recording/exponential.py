"""Base-2 exponential buckets that give the OTel SDK's exponential histogram points, and their exact merge.

The SDK's ``LogarithmMapping`` puts a positive ``v`` at scale ``s`` in bucket
``floor(log(v) * ldexp(1/ln 2, s))`` (an exact power of two goes one bucket down). Scaling by a power
of two is exact in binary floating point, so the index at scale ``s`` is the index at scale 20 shifted
right by ``20 - s``: whatever order values arrive in and however often buckets are downscaled, a
histogram is a function of its values, ``max_size`` and ``max_scale`` only. That is what lets the
hot path fill one set of buckets per series and each reader merge them into the point the SDK would
have made from the same measurements. Scales below 1 (the SDK's ``ExponentMapping``) are not used:
they need values spanning more than 2**80 at the default size.
"""

from __future__ import annotations

import math
from math import floor, frexp, ldexp, log

__all__ = ["MAX_SCALE", "MAX_SIZE", "MIN_SCALE", "ExponentialBuckets", "index_of"]

#: The SDK's default and otel-trading's limits for ``ExponentialBucketHistogramAggregation``.
MAX_SCALE = 20
MAX_SIZE = 160
#: Below this the SDK maps with exponents, not logarithms (see the module docstring).
MIN_SCALE = 1

_INV_LN2 = 1 / log(2)
_MIN_NORMAL = 2.2250738585072014e-308
_MIN_NORMAL_EXPONENT = -1022
_MAX_NORMAL_EXPONENT = 1023


def _scale_factor(scale: int) -> float:
    # The SDK's LogarithmMapping._scale_factor, computed the same way so indices agree bit for bit.
    return ldexp(_INV_LN2, scale)


def index_of(value: float, scale: int) -> int:
    """The SDK's bucket index of ``value`` (> 0) at ``scale`` (1..20)."""
    return _index(value, scale, _scale_factor(scale))


def _index(value: float, scale: int, factor: float) -> int:
    if value <= _MIN_NORMAL:
        return (_MIN_NORMAL_EXPONENT << scale) - 1
    mantissa, exponent = frexp(value)
    if mantissa == 0.5:  # an exact power of two is the upper bound of the bucket below
        return ((exponent - 1) << scale) - 1
    return min(floor(log(value) * factor), ((_MAX_NORMAL_EXPONENT + 1) << scale) - 1)


class ExponentialBuckets:
    """Positive-value buckets at one scale, with the count, zero count, sum and extremes beside them.

    ``counts`` maps bucket index to count and never spans ``max_size`` indices or more: a value that
    would widen it further lowers the scale first, as the SDK does.
    """

    __slots__ = ("count", "counts", "factor", "hi", "lo", "max", "max_size", "min", "scale", "sum", "zero")

    def __init__(self, max_scale: int = MAX_SCALE, max_size: int = MAX_SIZE) -> None:
        self.max_size = max_size
        self.scale = max_scale
        self.factor = _scale_factor(max_scale)
        self.counts: dict[int, int] = {}
        self.lo = 0
        self.hi = -1
        self.count = 0
        self.zero = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        """One measurement (durations: ``value >= 0``)."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0.0:
            self.zero += 1
            return
        x = log(value) * self.factor
        i = floor(x)
        # Only a value this close above a bucket boundary can be an exact power of two.
        if x - i < 1e-6 or value <= _MIN_NORMAL:
            i = _index(value, self.scale, self.factor)
        counts = self.counts
        if self.lo <= i <= self.hi:
            try:
                counts[i] += 1
            except KeyError:  # inside the range, but not seen yet
                counts[i] = 1
            return
        if not counts:
            self.lo = self.hi = i
            counts[i] = 1
            return
        lo, hi = min(self.lo, i), max(self.hi, i)
        change = 0
        while (hi >> change) - (lo >> change) >= self.max_size:
            change += 1
        if change:
            self.downscale(change)
            i >>= change
        self.lo, self.hi = min(self.lo, i), max(self.hi, i)
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1

    def downscale(self, change: int) -> None:
        """Lower the scale by ``change`` (>= 0): every ``2**change`` neighbouring buckets become one."""
        if change <= 0:
            return
        merged: dict[int, int] = {}
        for i, n in self.counts.items():
            j = i >> change
            merged[j] = merged.get(j, 0) + n
        self.counts = merged
        self.scale -= change
        self.factor = _scale_factor(self.scale)
        self.lo >>= change
        self.hi >>= change

    def fit(self, max_scale: int, max_size: int, lo: int | None = None, hi: int | None = None) -> None:
        """Lower the scale to at most ``max_scale`` and until the range (widened to ``lo``/``hi``) spans
        fewer than ``max_size`` buckets."""
        change = max(0, self.scale - max_scale)
        if self.counts:
            low = self.lo if lo is None else min(self.lo, lo)
            high = self.hi if hi is None else max(self.hi, hi)
            while (high >> change) - (low >> change) >= max_size:
                change += 1
        self.downscale(change)

    def merge(self, other: ExponentialBuckets, max_scale: int, max_size: int) -> None:
        """Add ``other`` (left unchanged) into these buckets, at the scale the SDK would report for the union."""
        self.count += other.count
        self.zero += other.zero
        self.sum += other.sum
        if other.min < self.min:
            self.min = other.min
        if other.max > self.max:
            self.max = other.max
        if not other.counts:
            return
        scale = min(other.scale, max_scale) if not self.counts else min(self.scale, other.scale, max_scale)
        shift = other.scale - scale
        lo, hi = other.lo >> shift, other.hi >> shift
        if self.counts:
            own = self.scale - scale
            lo, hi = min(lo, self.lo >> own), max(hi, self.hi >> own)
        change = 0
        while (hi >> change) - (lo >> change) >= max_size:
            change += 1
        scale -= change
        if self.counts:
            self.downscale(self.scale - scale)
        else:
            self.scale, self.factor = scale, _scale_factor(scale)
            self.lo, self.hi = lo >> change, hi >> change
        shift = other.scale - scale
        counts = self.counts
        for i, n in other.counts.items():
            j = i >> shift
            counts[j] = counts.get(j, 0) + n
        self.lo = min(self.lo, other.lo >> shift)
        self.hi = max(self.hi, other.hi >> shift)

    def copy(self) -> ExponentialBuckets:
        twin = ExponentialBuckets.__new__(ExponentialBuckets)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.counts = dict(self.counts)
        return twin

    def offset_counts(self) -> tuple[int, list[int]]:
        """The positive buckets as an OTLP offset and contiguous counts (``(0, [0])`` when empty, as the SDK)."""
        if not self.counts:
            return 0, [0]
        counts = self.counts
        return self.lo, [counts.get(i, 0) for i in range(self.lo, self.hi + 1)]
