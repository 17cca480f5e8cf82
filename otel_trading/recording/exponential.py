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
from typing import Any

__all__ = [
    "E_COUNTS",
    "E_FACTOR",
    "E_HI",
    "E_LO",
    "E_SCALE",
    "E_SUM",
    "E_WIDTH",
    "E_ZERO",
    "MAX_SCALE",
    "MAX_SIZE",
    "MIN_NORMAL",
    "MIN_SCALE",
    "Epoch",
    "ExponentialBuckets",
    "as_buckets",
    "epoch_add",
    "epoch_taken",
    "fold_epoch",
    "index_of",
    "late_in",
    "new_epoch",
]

#: The SDK's default and otel-trading's limits for ``ExponentialBucketHistogramAggregation``.
MAX_SCALE = 20
MAX_SIZE = 160
#: Below this the SDK maps with exponents, not logarithms (see the module docstring).
MIN_SCALE = 1

_INV_LN2 = 1 / log(2)
#: The smallest normal double: the SDK puts everything at or below it in one bucket.
MIN_NORMAL = 2.2250738585072014e-308
MIN_NORMAL_EXPONENT = -1022
_MAX_NORMAL_EXPONENT = 1023


def _scale_factor(scale: int) -> float:
    # The SDK's LogarithmMapping._scale_factor, computed the same way so indices agree bit for bit.
    return ldexp(_INV_LN2, scale)


_FACTOR_20 = _scale_factor(MAX_SCALE)


def index_of(value: float, scale: int) -> int:
    """The SDK's bucket index of ``value`` (> 0) at ``scale`` (1..20)."""
    return _index(value, scale, _scale_factor(scale))


def _index(value: float, scale: int, factor: float) -> int:
    if scale < MIN_SCALE:
        # Below scale 1 the SDK maps by exponent, which can disagree with the logarithm one ulp from a
        # power of two (its result then depends on the order of measurements): keep the shifted index.
        return _index(value, MAX_SCALE, _FACTOR_20) >> (MAX_SCALE - scale)
    if value <= MIN_NORMAL:
        return (MIN_NORMAL_EXPONENT << scale) - 1
    mantissa, exponent = frexp(value)
    if mantissa == 0.5:  # an exact power of two is the upper bound of the bucket below
        return ((exponent - 1) << scale) - 1
    return min(floor(log(value) * factor), ((_MAX_NORMAL_EXPONENT + 1) << scale) - 1)


def _scale_change(lo: int, hi: int, max_size: int) -> int:
    """How much to lower the scale so that indices ``lo``..``hi`` span fewer than ``max_size`` buckets."""
    change = 0
    while (hi >> change) - (lo >> change) >= max_size:
        change += 1
    return change


def _downscaled(counts: dict[int, int], change: int) -> dict[int, int]:
    """``counts`` at a scale ``change`` lower: every ``2**change`` neighbouring buckets become one."""
    merged: dict[int, int] = {}
    for i, n in counts.items():
        merged[i >> change] = merged.get(i >> change, 0) + n
    return merged


class ExponentialBuckets:
    """Positive-value buckets at one scale, with the count, zero count, sum and extremes beside them.

    What collections and readers merge the rows' epochs into. ``counts`` maps bucket index to count and
    never spans ``max_size`` indices or more: a merge that would widen it further lowers the scale
    first, as the SDK does.
    """

    __slots__ = ("count", "counts", "hi", "lo", "max", "max_size", "min", "scale", "sum", "zero")

    def __init__(self, max_scale: int = MAX_SCALE, max_size: int = MAX_SIZE) -> None:
        self.max_size = max_size
        self.scale = max_scale
        self.counts: dict[int, int] = {}
        self.lo = 0
        self.hi = -1
        self.count = 0
        self.zero = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def downscale(self, change: int) -> None:
        """Lower the scale by ``change`` (>= 0): every ``2**change`` neighbouring buckets become one."""
        if change <= 0:
            return
        self.counts = _downscaled(self.counts, change)
        self.scale -= change
        self.lo >>= change
        self.hi >>= change

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
        change = _scale_change(lo, hi, max_size)
        scale -= change
        if self.counts:
            self.downscale(self.scale - scale)
        else:
            self.scale = scale
            self.lo, self.hi = lo >> change, hi >> change
        shift = other.scale - scale
        counts = self.counts
        for i, n in other.counts.items():
            j = i >> shift
            counts[j] = counts.get(j, 0) + n
        self.lo = min(self.lo, other.lo >> shift)
        self.hi = max(self.hi, other.hi >> shift)

    def offset_counts(self) -> tuple[int, list[int]]:
        """The positive buckets as an OTLP offset and contiguous counts (``(0, [0])`` when empty, as the SDK)."""
        if not self.counts:
            return 0, [0]
        counts = self.counts
        return self.lo, [counts.get(i, 0) for i in range(self.lo, self.hi + 1)]


# -- a row's epoch ---------------------------------------------------------------------------------
# The buckets one row (one writer thread) filled since the last collection, as a list so that a hot
# path reads its fields by index. Count, min and max are not kept: the row's own columns have them.
E_FACTOR, E_LO, E_HI, E_ZERO, E_SUM, E_COUNTS, E_SCALE, E_MAX_SIZE = range(8)
E_WIDTH = 8  # the epoch's length

Epoch = list[Any]  # [factor, lo, hi, zero count, sum, {index: count}, scale, max_size]


def new_epoch(max_scale: int = MAX_SCALE, max_size: int = MAX_SIZE) -> Epoch:
    return [_scale_factor(max_scale), 0, -1, 0, 0.0, {}, max_scale, max_size]


def epoch_add(e: Epoch, value: float) -> None:
    """One measurement into ``e``, whatever it needs (hot paths inline the in-range case)."""
    e[E_SUM] += value
    if value <= 0.0:
        e[E_ZERO] += 1
        return
    i = _index(value, e[E_SCALE], e[E_FACTOR])
    counts = e[E_COUNTS]
    if not counts:
        e[E_LO] = e[E_HI] = i
        counts[i] = 1
        return
    lo, hi = min(e[E_LO], i), max(e[E_HI], i)
    change = _scale_change(lo, hi, e[E_MAX_SIZE])
    if change:
        # A new dict rather than an update in place: a reader copying the old one sees it whole.
        counts = e[E_COUNTS] = _downscaled(counts, change)
        e[E_SCALE] -= change
        e[E_FACTOR] = _scale_factor(e[E_SCALE])
        i >>= change
        lo >>= change
        hi >>= change
    counts[i] = counts.get(i, 0) + 1
    e[E_LO], e[E_HI] = lo, hi


def epoch_taken(e: Epoch) -> tuple[int, float, dict[int, int]]:
    """What ``e`` holds now, for ``late_in`` at the next collection."""
    return e[E_ZERO], e[E_SUM], dict(e[E_COUNTS])


def _buckets(scale: int, max_size: int, zero: int, total: float, counts: dict[int, int]) -> ExponentialBuckets:
    b = ExponentialBuckets(scale, max_size)
    b.zero, b.sum, b.counts = zero, total, counts
    b.count = zero + sum(counts.values())
    if counts:
        b.lo, b.hi = min(counts), max(counts)
    return b


def as_buckets(e: Epoch, taken: tuple[int, float, dict[int, int]]) -> ExponentialBuckets:
    """The buckets ``taken`` from ``e`` (empty edge indices dropped)."""
    zero, total, counts = taken
    return _buckets(e[E_SCALE], e[E_MAX_SIZE], zero, total, {i: n for i, n in counts.items() if n})


def late_in(e: Epoch, taken: tuple[int, float, dict[int, int]]) -> ExponentialBuckets | None:
    """What a writer that read ``e`` just before its collection added after ``taken`` was copied, if anything.

    A taken epoch keeps its scale (rescaling happens under the series lock, only on the row's current
    epoch), so the difference is exact bucket by bucket.
    """
    zero, total, counts = epoch_taken(e)
    if zero == taken[0] and counts == taken[2] and total == taken[1]:
        return None
    before = taken[2]
    added = {i: n - before.get(i, 0) for i, n in counts.items() if n != before.get(i, 0)}
    return _buckets(e[E_SCALE], e[E_MAX_SIZE], zero - taken[0], total - taken[1], added)


def fold_epoch(into: Epoch | None, e: Epoch) -> Epoch:
    """``into`` (None: nothing yet) with ``e`` added, for rows folded for good (a thread that ended)."""
    merged = as_buckets(e, epoch_taken(e))
    if into is not None:
        merged.merge(as_buckets(into, epoch_taken(into)), MAX_SCALE, max(into[E_MAX_SIZE], e[E_MAX_SIZE]))
    out = new_epoch(merged.scale, merged.max_size)
    out[E_ZERO], out[E_SUM], out[E_COUNTS] = merged.zero, merged.sum, merged.counts
    if merged.counts:
        out[E_LO], out[E_HI] = merged.lo, merged.hi
    return out
