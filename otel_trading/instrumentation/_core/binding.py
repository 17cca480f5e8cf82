"""What one instrumented breaker records into, shared by the breaker adapters and custom classes.

A ``BreakerBinding`` plays the part our own ``CircuitBreaker`` plays for the recording layer: it is
attached to the series of its ``name`` label with its own per-thread rows, and the
``circuit_breaker_state`` gauge reads its ``state`` (an int 0/1/2) at collection. The instrumented
breaker itself is never modified: the binding is kept in a ``WeakIdentityMap`` beside it.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from otel_trading import metric_contract as mc
from otel_trading.instrumentation._core.identity import WeakIdentityMap
from otel_trading.instrumentation._core.reporting import report
from otel_trading.recording import MetricsRegistry, Row, Series, ThreadRows, observe
from otel_trading.recording.exemplars import current_context
from otel_trading.recording.rows import B0, BOUNDS, MAX, MIN, SUCCESSES, SUM, CountedRow, CountedThreadRows, fork_safe

__all__ = [
    "STATE_LABELS",
    "UNNAMED",
    "UNTIMED",
    "BreakerBinding",
    "HotEntry",
    "Timed",
    "bind_weakly",
    "breaker_label",
    "record_timed",
]

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
_FIRST_BOUND = BOUNDS[0]


class _Untimed:
    """Stands in for the series on hot paths when the latency histogram is disabled."""

    fast = False


UNTIMED = _Untimed()
#: State code -> the ``from_state``/``to_state`` label value (as our own breaker reports it).
STATE_LABELS: tuple[str, ...] = ("closed", "open", "half_open")
#: Label of breakers that have no name (a library's default ``name=None``).
UNNAMED = "unnamed"


class Timed(Protocol):
    """What ``record_timed`` reads: a ``BreakerBinding``, or an event type's record."""

    hot: Any
    timed: bool
    series: Series


def record_timed(owner: Timed, row: Row, elapsed: float, implied: int) -> None:
    """A timed outcome on a row whose ``implied`` column counts only the outcomes not in its histogram
    (a ``CountedRow``/``CountedThreadRows`` row): one histogram update when ``owner``'s series is bound
    to the rows, else the series' own way, and the explicit count when that did not time it."""
    if owner.hot.fast:
        observe(row, elapsed)
        if current_context():  # a span (or another value) is current: an exemplar candidate
            owner.hot.offer_exemplar(elapsed)
    elif not owner.timed or not owner.series.observe_slow(row, elapsed):
        row[implied] += 1


B = TypeVar("B", bound=Timed)


class HotEntry(Generic[B]):
    """What a hot path needs of one series, in one lookup: ``counted``, per-thread rows whose
    ``implied`` column is their histogram count; ``local``, where this thread's row is
    (``local.row``); ``hot`` (``hot.fast``: timed and bound to the rows); ``binding``, what
    ``record_timed`` reads otherwise. The compiled hooks read these slots by name."""

    __slots__ = ("binding", "counted", "hot", "local")

    def __init__(self, binding: B, implied: int, owner: object = None) -> None:
        """``owner``: what the rows live as long as (default: ``binding``)."""
        self.binding = binding
        self.counted = CountedThreadRows(implied)
        self.local = self.counted.local
        self.hot = binding.hot
        binding.series.attach(binding if owner is None else owner, self.counted)

    def row(self) -> Row:
        """This thread's row."""
        try:
            row: Row = self.local.row
            return row
        except AttributeError:
            return self.counted.row()

    def observe(self, elapsed: float) -> None:
        """A timed outcome of the ``implied`` column (a success, an event processed): the pure-Python
        hooks' one histogram update."""
        try:
            row: Row = self.local.row
        except AttributeError:
            row = self.counted.row()
        if self.hot.fast:
            # ``recording.rows.observe`` inlined: three of the pure-Python rows of bench/run.py are
            # 0.1-0.3x of a bare call slower through the call.
            row[SUM] += elapsed
            if elapsed < row[MIN]:
                row[MIN] = elapsed
            if elapsed > row[MAX]:
                row[MAX] = elapsed
            row[B0 if elapsed <= _FIRST_BOUND else B0 + bisect_left(BOUNDS, elapsed)] += 1
            if current_context():
                self.hot.offer_exemplar(elapsed)
        else:
            record_timed(self.binding, row, elapsed, self.counted.implied)


def breaker_label(name: object) -> str:
    return name if isinstance(name, str) and name.strip() else UNNAMED


class BreakerBinding:
    """One instrumented breaker: the series of its name, its rows, and how to read its state.

    ``polled`` bindings (custom classes) detect transitions by comparing successive state reads;
    library bindings are told about transitions by a hook and never infer them.
    """

    __slots__ = (
        "__weakref__",
        "_alive",
        "_last",
        "_lock",
        "_polled",
        "_read_state",
        "exclusive",
        "hot",
        "name",
        "raw_name",
        "rows",
        "series",
        "timed",
    )

    def __init__(
        self,
        registry: MetricsRegistry,
        name: str,
        read_state: Callable[[], int | None],
        *,
        polled: bool = False,
        raw_name: object = None,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self._alive = alive
        self.name = name
        #: the instrumented object's own name value, compared cheaply to notice a rename
        self.raw_name = raw_name
        self.series = registry.breaker(name)
        self.rows = ThreadRows()
        self.timed = registry.enabled(mc.BREAKER_LATENCY.key)
        #: ``hot.fast`` is the hot path's one test: True only when timed and bound to the rows.
        self.hot: Any = self.series if self.timed else UNTIMED
        self._read_state = read_state
        self._polled = polled
        self._lock = threading.Lock()
        fork_safe(self)
        self._last = CLOSED
        first = self._safe_read()
        if first is not None:
            self._last = first
        #: A row for code that only runs under the breaker's own lock (see ``exclusive_row``).
        self.exclusive: Row | None = None
        self.series.attach(self, self.rows)

    def exclusive_row(self) -> Row:
        """One row shared by every thread, for a hook the library only runs under its own lock:
        the lock already serialises the writes, so no per-thread lookup is needed. It is a
        ``CountedRow``: a timed success only bumps the histogram."""
        if self.exclusive is None:
            source = CountedRow(SUCCESSES)
            self.series.attach(self, source)
            self.exclusive = source.row
        return self.exclusive

    def _safe_read(self) -> int | None:
        try:
            return self._read_state()
        except Exception as exc:
            report(f"reading the state of breaker {self.name!r}", exc)
            return None

    @property
    def state(self) -> int | None:
        """Read by the ``circuit_breaker_state`` gauge at collection; never raises. None once the
        breaker is gone, so a dead breaker's last state is not reported."""
        code = self._safe_read()  # also releases dead bindings (see read_state)
        if not self._alive():
            return None
        if code is None:
            return self._last
        if self._polled:
            self.observe_state(code)
        else:
            self._last = code
        return code

    def observe_state(self, code: int) -> None:
        """Record a transition if ``code`` differs from the last state seen (polled bindings)."""
        if code == self._last:
            return
        with self._lock:
            old, self._last = self._last, code
        if old != code:
            self.series.count_transition(STATE_LABELS[old], STATE_LABELS[code])

    def transition(self, old: int, new: int) -> None:
        """A transition reported by a library hook."""
        self._last = new
        if old != new:
            self.series.count_transition(STATE_LABELS[old], STATE_LABELS[new])

    def count(self, column: int, elapsed: float | None = None) -> None:
        """Count an outcome (``SUCCESSES``, ``FAILURES``, ``REJECTED``); time it when ``elapsed`` is known."""
        row = self.rows.row()
        row[column] += 1
        if elapsed is not None and self.timed:
            self.series.observe(row, elapsed)


def bind_weakly(
    registry: MetricsRegistry,
    bindings: WeakIdentityMap[BreakerBinding],
    breaker: Any,
    label: str,
    state_of: Callable[[Any], int | None],
    *,
    polled: bool = False,
    raw_name: object = None,
) -> BreakerBinding:
    """A binding for ``breaker``, kept beside it in ``bindings``; its state is read through a weak
    reference, so a collected breaker stops reporting (and its binding is released at collection)."""
    ref = weakref.ref(breaker)

    def read_state() -> int | None:
        b = ref()
        if b is None:
            bindings.flush()  # at collection, outside recording locks: release dead bindings
            return None
        return state_of(b)

    binding = BreakerBinding(
        registry, label, read_state, polled=polled, raw_name=raw_name, alive=lambda: ref() is not None
    )
    bindings.set(breaker, binding)
    return binding
