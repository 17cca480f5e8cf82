"""What ``top`` shows: a frame of rows per breaker, event type and loop, computed from two reads.

A :class:`Reading` holds one scrape's cumulative values (counters, histogram buckets, the breaker
state gauge). Rates and p99s need two: :func:`frame_between` turns a previous and a current reading
into a :class:`Frame`, where every rate and p99 is None ("—" on screen) until there is a previous
reading, and again after a counter went backwards (the bot restarted). Fleet sources build frames
from PromQL instead, where Prometheus has done the two reads already.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from otel_trading import metric_contract as mc
from otel_trading.tooling.histograms import Buckets, buckets_from, count_above, difference, quantile, worst_bound

__all__ = [
    "STALL_SECONDS",
    "STATE_WORDS",
    "BreakerRow",
    "BreakerTotals",
    "EventRow",
    "EventTotals",
    "Frame",
    "LoopRow",
    "Reading",
    "finite",
    "frame_between",
    "reading_from_samples",
]

#: ``circuit_breaker_state`` values as words (the contract's description).
STATE_WORDS: dict[int, str] = {0: "CLOSED", 1: "OPEN", 2: "HALF_OPEN"}
#: A probe later than this is a stall (a bucket boundary of the lag histogram, as in the alert).
STALL_SECONDS = 0.1


@dataclass(frozen=True)
class BreakerTotals:
    state: int | None = None
    successes: float = 0.0
    failures: float = 0.0
    rejected: float = 0.0
    latency: Buckets = ()


@dataclass(frozen=True)
class EventTotals:
    published: float = 0.0
    processed: float = 0.0
    errors: float = 0.0
    processing: Buckets = ()


@dataclass(frozen=True)
class Reading:
    """One scrape of one bot: cumulative values, summed over every label but the row's own."""

    taken_at: float
    breakers: dict[str, BreakerTotals] = field(default_factory=dict)
    events: dict[str, EventTotals] = field(default_factory=dict)
    loops: dict[str, Buckets] = field(default_factory=dict)


@dataclass(frozen=True)
class BreakerRow:
    instance: str
    name: str
    state: int | None
    calls_per_s: float | None
    failure_share: float | None
    rejected_per_s: float | None
    p99_s: float | None


@dataclass(frozen=True)
class EventRow:
    instance: str
    event_type: str
    published_per_s: float | None
    processed_per_s: float | None
    backlog: float | None
    p99_s: float | None
    errors_per_s: float | None


@dataclass(frozen=True)
class LoopRow:
    instance: str
    loop: str
    p99_s: float | None
    worst_s: float | None
    stalls: float | None
    #: Stalls since the previous read (or in the rate window): the row is highlighted while > 0.
    new_stalls: float | None


@dataclass(frozen=True)
class Frame:
    """Everything one screen shows. ``rates_ready`` is False until a second read."""

    source: str
    breakers: tuple[BreakerRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    loops: tuple[LoopRow, ...] = ()
    rates_ready: bool = False
    #: True for a fleet (rows per instance): the view adds an instance column.
    fleet: bool = False

    @property
    def empty(self) -> bool:
        return not (self.breakers or self.events or self.loops)


# -- a scrape -> a reading ----------------------------------------------------------------------------

_SAMPLE_COUNTERS = {
    mc.BREAKER_SUCCESSES.prometheus_name: ("breaker", "successes"),
    mc.BREAKER_FAILURES.prometheus_name: ("breaker", "failures"),
    mc.BREAKER_REJECTED.prometheus_name: ("breaker", "rejected"),
    mc.BUS_PUBLISHED.prometheus_name: ("event", "published"),
    mc.BUS_PROCESSED.prometheus_name: ("event", "processed"),
    mc.BUS_HANDLER_ERRORS.prometheus_name: ("event", "errors"),
}
_SAMPLE_BUCKETS = {
    mc.BREAKER_LATENCY.prometheus_name + "_bucket": ("breaker", "latency"),
    mc.BUS_PROCESSING_DURATION.prometheus_name + "_bucket": ("event", "processing"),
    mc.LOOP_LAG.prometheus_name + "_bucket": ("loop", "lag"),
}
_KEY_LABEL = {"breaker": "name", "event": "event_type", "loop": "loop"}


def reading_from_samples(samples: Iterable[tuple[str, dict[str, str], float]], taken_at: float) -> Reading:
    """A reading from ``(sample name, labels, value)`` triples of one scrape; other metrics are ignored."""
    values: dict[tuple[str, str], dict[str, float]] = {}
    buckets: dict[tuple[str, str], dict[str, dict[float, float]]] = {}
    states: dict[str, int] = {}
    for name, labels, value in samples:
        if name == mc.BREAKER_STATE.prometheus_name and "name" in labels:
            # Same-named breakers (several scopes) report the worst state, as the gauge does.
            states[labels["name"]] = max(states.get(labels["name"], 0), int(value))
        elif name in _SAMPLE_COUNTERS:
            kind, column = _SAMPLE_COUNTERS[name]
            key = labels.get(_KEY_LABEL[kind])
            if key is not None:
                row = values.setdefault((kind, key), {})
                row[column] = row.get(column, 0.0) + value
        elif name in _SAMPLE_BUCKETS:
            kind, column = _SAMPLE_BUCKETS[name]
            key, le = labels.get(_KEY_LABEL[kind]), labels.get("le")
            if key is not None and le is not None:
                series = buckets.setdefault((kind, key), {}).setdefault(column, {})
                bound = float(le)
                series[bound] = series.get(bound, 0.0) + value
    names = {key for kind, key in values if kind == "breaker"} | set(states)
    names |= {key for kind, key in buckets if kind == "breaker"}
    breakers = {
        n: BreakerTotals(
            state=states.get(n),
            successes=values.get(("breaker", n), {}).get("successes", 0.0),
            failures=values.get(("breaker", n), {}).get("failures", 0.0),
            rejected=values.get(("breaker", n), {}).get("rejected", 0.0),
            latency=buckets_from(buckets.get(("breaker", n), {}).get("latency", {}).items()),
        )
        for n in names
    }
    types = {key for kind, key in values if kind == "event"} | {key for kind, key in buckets if kind == "event"}
    events = {
        t: EventTotals(
            published=values.get(("event", t), {}).get("published", 0.0),
            processed=values.get(("event", t), {}).get("processed", 0.0),
            errors=values.get(("event", t), {}).get("errors", 0.0),
            processing=buckets_from(buckets.get(("event", t), {}).get("processing", {}).items()),
        )
        for t in types
    }
    loops = {key: buckets_from(cols["lag"].items()) for (kind, key), cols in buckets.items() if kind == "loop"}
    return Reading(taken_at, breakers, events, loops)


# -- two readings -> a frame --------------------------------------------------------------------------


def _rate(now: float, before: float | None, seconds: float | None) -> float | None:
    if before is None or seconds is None or now < before:
        return None  # no previous read yet, or the counter restarted
    return (now - before) / seconds


def _p99(now: Buckets, before: Buckets | None) -> float | None:
    if before is None:
        return None
    observed = difference(now, before)
    return quantile(0.99, observed) if observed else None


def frame_between(previous: Reading | None, current: Reading, source: str) -> Frame:
    """The frame for ``current``; rates and p99s cover the time since ``previous`` (None: not yet)."""
    seconds = current.taken_at - previous.taken_at if previous is not None else None
    if seconds is not None and seconds <= 0:
        seconds = None
    breakers = []
    for name in sorted(current.breakers):
        now = current.breakers[name]
        before = previous.breakers.get(name) if previous is not None and seconds else None
        successes = _rate(now.successes, before.successes if before else None, seconds)
        failures = _rate(now.failures, before.failures if before else None, seconds)
        calls = successes + failures if successes is not None and failures is not None else None
        breakers.append(
            BreakerRow(
                instance="",
                name=name,
                state=now.state,
                calls_per_s=calls,
                failure_share=failures / calls if calls and failures is not None else None,
                rejected_per_s=_rate(now.rejected, before.rejected if before else None, seconds),
                p99_s=_p99(now.latency, before.latency if before else None),
            )
        )
    events = []
    for event_type in sorted(current.events):
        ev = current.events[event_type]
        was = previous.events.get(event_type) if previous is not None and seconds else None
        events.append(
            EventRow(
                instance="",
                event_type=event_type,
                published_per_s=_rate(ev.published, was.published if was else None, seconds),
                processed_per_s=_rate(ev.processed, was.processed if was else None, seconds),
                backlog=max(0.0, ev.published - ev.processed),
                p99_s=_p99(ev.processing, was.processing if was else None),
                errors_per_s=_rate(ev.errors, was.errors if was else None, seconds),
            )
        )
    loops = []
    for loop in sorted(current.loops):
        lag = current.loops[loop]
        earlier = previous.loops.get(loop) if previous is not None and seconds else None
        observed = difference(lag, earlier) if earlier is not None else None
        stalls = count_above(lag, STALL_SECONDS)
        before_stalls = count_above(earlier, STALL_SECONDS) if earlier is not None else None
        loops.append(
            LoopRow(
                instance="",
                loop=loop,
                p99_s=quantile(0.99, observed) if observed else None,
                worst_s=worst_bound(observed) if observed else None,
                stalls=stalls,
                new_stalls=stalls - before_stalls if stalls is not None and before_stalls is not None else None,
            )
        )
    return Frame(
        source=source,
        breakers=tuple(breakers),
        events=tuple(events),
        loops=tuple(loops),
        rates_ready=seconds is not None,
    )


def finite(value: float | None) -> float | None:
    """``value`` unless it is NaN (PromQL's answer for "no data"), else None."""
    return None if value is None or math.isnan(value) else value
