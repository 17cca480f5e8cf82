"""Hypothesis strategies for durations in seconds, batches of them, and per-reader collection schedules."""

from __future__ import annotations

import math

from hypothesis import strategies as st

MIN_DURATION = 1e-9
MAX_DURATION = 1e4
# 2**-29 (1.86e-9) .. 2**13 (8192): every power of two inside [MIN_DURATION, MAX_DURATION].
POWER_OF_TWO_EXPONENTS = range(-29, 14)
MAX_ULPS = 4


def _clamp(v: float) -> float:
    return min(MAX_DURATION, max(MIN_DURATION, v))


def _ulps(v: float, n: int) -> float:
    """`v` moved by `n` ulps (negative: downwards)."""
    for _ in range(abs(n)):
        v = math.nextafter(v, math.inf if n > 0 else -math.inf)
    return v


def power_of_two_neighbourhood() -> list[float]:
    """Every power of two in range with its ±1..MAX_ULPS ulp neighbours, in increasing order."""
    return [_ulps(2.0**e, n) for e in POWER_OF_TWO_EXPONENTS for n in range(-MAX_ULPS, MAX_ULPS + 1)]


def powers_of_two_and_neighbours() -> st.SearchStrategy[float]:
    """A power of two in [1e-9, 1e4] or one of its ±1..4 ulp neighbours."""
    return st.builds(
        _ulps,
        st.sampled_from(POWER_OF_TWO_EXPONENTS).map(lambda e: 2.0**e),
        st.integers(-MAX_ULPS, MAX_ULPS),
    )


def log_uniform_durations() -> st.SearchStrategy[float]:
    """Durations spread evenly over the octaves of [1e-9, 1e4]."""
    lo, hi = math.log2(MIN_DURATION), math.log2(MAX_DURATION)
    return st.floats(lo, hi).map(lambda x: _clamp(2.0**x))


def positive_durations() -> st.SearchStrategy[float]:
    """Positive durations: plain floats in range, log-uniform ones, and powers of two with their neighbours."""
    return st.one_of(
        st.floats(MIN_DURATION, MAX_DURATION),
        log_uniform_durations(),
        powers_of_two_and_neighbours(),
    )


def durations() -> st.SearchStrategy[float]:
    """Any duration a bot records: a positive one, or exactly 0.0 (a clamped loop lag)."""
    return st.one_of(positive_durations(), st.just(0.0))


def clustered(max_values: int = 8) -> st.SearchStrategy[list[float]]:
    """Values within a narrow relative band around one centre (forces high scales; may straddle a power of two)."""
    widths = st.sampled_from([0.0, 1e-12, 1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3])
    return st.builds(
        lambda c, w, us: [_clamp(c * (1.0 + u * w)) for u in us],
        positive_durations(),
        widths,
        st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=max_values),
    )


def wide(max_values: int = 8) -> st.SearchStrategy[list[float]]:
    """Values spread over many octaves, with extremes included often (forces rescales)."""
    extremes = st.sampled_from([MIN_DURATION, MAX_DURATION, 2.0**-29, 2.0**13, 1.0])
    return st.lists(st.one_of(log_uniform_durations(), extremes), min_size=2, max_size=max_values)


def batch_values(max_values: int = 8) -> st.SearchStrategy[list[float]]:
    """One batch: mixed durations, a narrow cluster, a wide spread, zeros only, or nothing."""
    return st.one_of(
        st.lists(durations(), max_size=max_values),
        clustered(max_values),
        wide(max_values),
        st.lists(st.just(0.0), min_size=1, max_size=3),
        st.builds(lambda a, b: a + b, clustered(max_values // 2 or 1), st.lists(st.just(0.0), max_size=2)),
    )


def batches(min_batches: int = 1, max_batches: int = 8, max_values: int = 8) -> st.SearchStrategy[list[list[float]]]:
    """A sequence of batches of durations."""
    return st.lists(batch_values(max_values), min_size=min_batches, max_size=max_batches)


def schedules(n_batches: int, n_readers: int, *, collect_last: bool = True) -> st.SearchStrategy[list[list[bool]]]:
    """Per reader, whether it is collected after each batch (`collect_last`: always after the last one)."""

    def one(flags: list[bool]) -> list[bool]:
        return [*flags[:-1], True] if collect_last and flags else flags

    return st.lists(
        st.lists(st.booleans(), min_size=n_batches, max_size=n_batches).map(one),
        min_size=n_readers,
        max_size=n_readers,
    )


@st.composite
def batches_and_schedules(
    draw: st.DrawFn,
    n_readers: int,
    *,
    min_batches: int = 1,
    max_batches: int = 8,
    max_values: int = 8,
    collect_last: bool = True,
) -> tuple[list[list[float]], list[list[bool]]]:
    """Batches plus a collection schedule per reader (`schedules`) of the same length."""
    bs = draw(batches(min_batches, max_batches, max_values))
    return bs, draw(schedules(len(bs), n_readers, collect_last=collect_last))
