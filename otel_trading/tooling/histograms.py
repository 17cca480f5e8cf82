"""Quantiles and bounds from cumulative Prometheus histogram buckets, the way PromQL computes them.

A histogram is a sequence of ``(upper bound, cumulative count)`` pairs in ascending order, the last
one ``+Inf`` (a scrape's ``_bucket`` samples). ``top`` estimates p99s from the difference of two
reads, ``doctor`` from a single one; both use :func:`quantile`, which interpolates within a bucket
exactly as PromQL's ``histogram_quantile`` does, so the numbers match the dashboard's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["Buckets", "buckets_from", "count_above", "difference", "quantile", "total", "worst_bound"]

Buckets = tuple[tuple[float, float], ...]


def buckets_from(pairs: Iterable[tuple[float, float]]) -> Buckets:
    """Sorted buckets from ``(le, cumulative count)`` pairs (e.g. parsed ``le`` labels)."""
    return tuple(sorted(pairs))


def total(buckets: Buckets) -> float:
    """The number of observations (the ``+Inf`` bucket's count); 0 for no buckets."""
    return buckets[-1][1] if buckets else 0.0


def difference(current: Buckets, previous: Buckets) -> Buckets | None:
    """What was observed between two reads; None if the bounds differ or a count went down (a restart)."""
    if len(current) != len(previous):
        return None
    out: list[tuple[float, float]] = []
    for (bound, now), (before_bound, before) in zip(current, previous, strict=True):
        if bound != before_bound or now < before:
            return None
        out.append((bound, now - before))
    return tuple(out)


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1), as ``histogram_quantile``: linear within the bucket holding the rank,
    the highest finite bound if that is ``+Inf``; None when nothing was observed."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    observations = buckets[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    lower, below = 0.0, 0.0
    for index, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return buckets[-2][0] if len(buckets) > 1 else None
            if index == 0 and bound <= 0:
                return bound
            inside = count - below
            if inside <= 0:
                return bound
            return lower + (bound - lower) * (rank - below) / inside
        lower, below = bound, count
    return None  # pragma: no cover - the +Inf bucket holds every observation


def worst_bound(buckets: Sequence[tuple[float, float]]) -> float | None:
    """The upper bound of the highest bucket holding an observation (``inf`` beyond the last finite
    one); None when nothing was observed."""
    worst = None
    below = 0.0
    for bound, count in buckets:
        if count > below:
            worst = bound
        below = count
    return worst


def count_above(buckets: Sequence[tuple[float, float]], bound: float) -> float | None:
    """Observations above the bucket boundary ``bound``; None if ``bound`` is no boundary of ``buckets``."""
    for upper, count in buckets:
        if upper == bound:
            return total(tuple(buckets)) - count
    return None
