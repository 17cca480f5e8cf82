"""Rows: the plain lists components count and time into on the hot path, one per writer."""

from __future__ import annotations

import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable
from random import random
from typing import Any, Protocol

from otel_trading import metric_contract as mc
from otel_trading.recording.exponential import fold_epoch

__all__ = [
    "B0",
    "BOUNDS",
    "C0",
    "C1",
    "C2",
    "EPOCH",
    "FAILURES",
    "HANDLER_ERRORS",
    "MAX",
    "MIN",
    "PROCESSED",
    "PUBLISHED",
    "REJECTED",
    "SUCCESSES",
    "SUM",
    "WIDTH",
    "CountedRow",
    "CountedThreadRows",
    "Row",
    "RowSource",
    "SingleRow",
    "ThreadRows",
    "add_row",
    "count_of",
    "fork_safe",
    "harvest",
    "implied_column",
    "new_row",
    "observe",
    "sample_gaps",
]

# Row layout shared by every component: three counters, then one histogram. Its buckets are the
# duration buckets (``BOUNDS``, breakers and buses) unless a row is made for other ``bounds`` (the
# event-loop monitor's); every function below works on a row of either width. ``EPOCH`` holds the
# row's exponential buckets since the last collection (``recording.exponential``), or None while
# no reader takes them.
C0, C1, C2, SUM, MIN, MAX, EPOCH, B0 = 0, 1, 2, 3, 4, 5, 6, 7
#: The counters of a breaker's rows.
SUCCESSES, FAILURES, REJECTED = C0, C1, C2
#: The counters of an event bus's rows (one row per event type).
PUBLISHED, PROCESSED, HANDLER_ERRORS = C0, C1, C2
BOUNDS: tuple[float, ...] = mc.DURATION_BUCKETS
WIDTH = B0 + len(BOUNDS) + 1

Row = list[Any]


def new_row(bounds: tuple[float, ...] = BOUNDS) -> Row:
    row: Row = [0] * (B0 + len(bounds) + 1)
    row[SUM] = 0.0
    row[MIN] = math.inf
    row[MAX] = -math.inf
    row[EPOCH] = None
    return row


def observe(row: Row, value: float, bounds: tuple[float, ...] = BOUNDS) -> None:
    """Add one value to a row's histogram columns (components inline this on their hot paths)."""
    row[SUM] += value
    if value < row[MIN]:
        row[MIN] = value
    if value > row[MAX]:
        row[MAX] = value
    row[B0 if value <= bounds[0] else B0 + bisect_left(bounds, value)] += 1


def count_of(row: Row) -> int:
    """How many durations a row's histogram holds."""
    return sum(row[B0:])


def add_row(into: Row, row: Row) -> None:
    """Add ``row`` into ``into``, exponential buckets included (``row`` no longer written)."""
    for i in range(len(into)):
        if i == EPOCH:
            if row[EPOCH] is not None:
                into[EPOCH] = fold_epoch(into[EPOCH], row[EPOCH])
        elif i == MIN:
            if row[MIN] < into[MIN]:
                into[MIN] = row[MIN]
        elif i == MAX:
            if row[MAX] > into[MAX]:
                into[MAX] = row[MAX]
        else:
            into[i] += row[i]


def harvest(into: Row, row: Row) -> None:
    """``add_row``, then start a new min/max epoch in ``row``.

    Delta readers report each interval's own min and max, which cumulative rows cannot give back;
    so every collection takes the extremes seen since the previous one out of the rows. A value
    recorded in the same instant as a collection may have its extreme counted in the next
    interval (its count, sum and bucket are never affected).

    The counters and buckets are read by one slice copy, atomic under the GIL: reading them column by
    column let a writer thread record many calls between the counter and the bucket columns, so one
    snapshot's counters and histogram could disagree by any amount. Now they differ at most by the
    one call each writer may be in the middle of recording.
    """
    low, row[MIN] = row[MIN], math.inf
    high, row[MAX] = row[MAX], -math.inf
    copy = row[:]
    copy[MIN], copy[MAX], copy[EPOCH] = low, high, None  # exponential buckets are taken apart
    add_row(into, copy)


def sample_gaps(rate: float) -> Callable[[], int] | None:
    """Gaps between sampled events for a ``rate`` in (0, 1); ``None`` means time every event.

    Drawing the geometric gap to the next sampled event is statistically the same as an
    independent ``random() < rate`` per event, but costs one decrement per unsampled event and no
    clock read: what makes ``sample_rate=0.1`` actually cheaper than 1.0 on a tick path.
    """
    if rate >= 1.0:
        return None
    if rate <= 0.0:
        raise ValueError("sample_gaps needs a rate > 0")
    scale = 1.0 / math.log1p(-rate)

    def gap() -> int:
        return int(math.log(1.0 - random()) * scale) + 1

    return gap


class RowSource(Protocol):
    def rows(self) -> Iterable[Row]: ...


class SingleRow:
    """A row written by one thread only (an event bus runs on one event loop)."""

    __slots__ = ("row",)

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.row = new_row(bounds)

    def rows(self) -> Iterable[Row]:
        return (self.row,)


class CountedRow(SingleRow):
    """A row whose ``implied`` column is its histogram's count plus what the column holds.

    For a hot path that times what it counts (a breaker's successes, a bus's processed events):
    a timed outcome only bumps the histogram, and the column counts the outcomes it did not time.
    The series adds the histogram count in when it reads the row.
    """

    __slots__ = ("implied",)

    def __init__(self, implied: int) -> None:
        super().__init__()
        self.implied = implied


def implied_column(source: RowSource) -> int | None:
    """The column a source's histogram count adds to (``CountedRow``), else None."""
    return getattr(source, "implied", None)


class ThreadRows:
    """One row per writing thread: exact counts from many threads, no lock on the hot path.

    Rows of threads that have ended are folded into ``_retired`` at collection, so memory is
    bounded by the number of live threads.
    """

    __slots__ = ("__weakref__", "_lock", "_retired", "_rows", "local")

    def __init__(self) -> None:
        # ``local.row`` is this thread's row once ``row()`` made it; hot paths read it directly.
        self.local = threading.local()
        self._rows: list[tuple[threading.Thread, Row]] = []
        self._lock = threading.Lock()
        self._retired = new_row()
        fork_safe(self)

    def row(self) -> Row:
        try:
            row: Row = self.local.row
            return row
        except AttributeError:
            row = new_row()
            with self._lock:
                self._rows.append((threading.current_thread(), row))
            self.local.row = row
            return row

    def rows(self) -> Iterable[Row]:
        with self._lock:
            live = []
            for thread, row in self._rows:
                if thread.is_alive():
                    live.append((thread, row))
                else:
                    add_row(self._retired, row)
            self._rows = live
            return [self._retired, *(row for _, row in live)]


class CountedThreadRows(ThreadRows):
    """Per-thread rows whose ``implied`` column is their histogram count (see ``CountedRow``), for
    hooks that many threads may run at once."""

    __slots__ = ("implied",)

    def __init__(self, implied: int) -> None:
        super().__init__()
        self.implied = implied


# -- fork ---------------------------------------------------------------------------------------------
# A lock another thread held at fork() stays held forever in the child. Every lock the recording
# layer takes lives in an object registered here and is replaced in the child right after a fork.
_lock_owners: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_safe(owner: Any) -> None:
    """Give ``owner._lock`` a fresh lock in a forked child."""
    _lock_owners.add(owner)


def _renew_locks_in_child() -> None:
    for owner in list(_lock_owners):
        owner._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_in_child)
