"""Where ``top`` reads: one bot's ``/metrics``, or a fleet through Prometheus' query API.

Both answer :meth:`poll` with a :class:`~otel_trading.tooling.top.model.Frame` or raise
:class:`SourceError` with a message fit for the screen (the view shows it and retries). HTTP goes
through the doctor's client: short timeouts, no proxy, basic auth from the URL, never a traceback.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from otel_trading import metric_contract as mc
from otel_trading.tooling.doctor.context import parse_exposition
from otel_trading.tooling.doctor.http_client import http_get, redact
from otel_trading.tooling.top.model import (
    STALL_SECONDS,
    BreakerRow,
    EventRow,
    Frame,
    LoopRow,
    Reading,
    finite,
    frame_between,
    reading_from_samples,
)

__all__ = ["MetricsEndpoint", "PrometheusFleet", "Source", "SourceError"]


class SourceError(Exception):
    """The source could not be read; the message says why, for the screen."""


class Source(Protocol):
    #: What the header shows (credentials removed).
    description: str

    def poll(self) -> Frame: ...


class MetricsEndpoint:
    """One bot's ``/metrics``: every poll scrapes it; rates come from this poll and the previous one."""

    def __init__(self, url: str, timeout: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.description = redact(url)
        self.timeout = timeout
        self._clock = clock
        self._previous: Reading | None = None

    def poll(self) -> Frame:
        response = http_get(self.url, self.timeout)
        taken_at = self._clock()
        if response.status is None:
            raise SourceError(f"cannot reach {self.description}: {response.error}")
        if response.status != 200:
            raise SourceError(f"{self.description} answered HTTP {response.status} {response.error}".rstrip())
        try:
            samples = parse_exposition(response.body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise SourceError(f"{self.description} does not answer in Prometheus text format: {exc}") from None
        reading = reading_from_samples(((s.name, dict(s.labels), s.value) for s in samples), taken_at)
        frame = frame_between(self._previous, reading, self.description)
        self._previous = reading
        return frame


class PrometheusFleet:
    """Every bot Prometheus scrapes, one row per instance, through instant PromQL queries.

    Prometheus has read each bot many times already, so rates (over ``window``) are there from
    the first poll. Histograms are read classic or native alike: each histogram query is the classic
    form over ``_bucket``/``_count`` ``or`` the same over the native series Prometheus 3 stores for an
    exponential histogram (where a row has both, the classic value is shown). Native stall counts are
    estimates: Prometheus interpolates inside the native bucket that holds ``STALL_SECONDS``.
    """

    def __init__(self, url: str, window: str = "1m", timeout: float = 3.0) -> None:
        self.base = url.rstrip("/")
        self.description = f"{redact(self.base)} (PromQL, rates over {window})"
        self.window = window
        self.timeout = timeout

    def _query(self, expr: str) -> list[tuple[dict[str, str], float | None]]:
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        response = http_get(url, self.timeout)
        if response.status is None:
            raise SourceError(f"cannot reach Prometheus at {redact(self.base)}: {response.error}")
        try:
            payload: Any = response.json()
        except ValueError:
            raise SourceError(
                f"{redact(self.base)} answered HTTP {response.status} with no JSON: is this Prometheus?"
            ) from None
        if response.status != 200 or payload.get("status") != "success":
            raise SourceError(f"Prometheus refused {expr!r}: {payload.get('error', response.status)}")
        rows = []
        for item in payload["data"]["result"]:
            try:
                value: float | None = finite(float(item["value"][1]))
            except (KeyError, IndexError, TypeError, ValueError):
                value = None
            rows.append((item.get("metric", {}), value))
        return rows

    def _by(self, expr: str, label: str) -> dict[tuple[str, str], float | None]:
        return {(m.get("instance", ""), m.get(label, "")): v for m, v in self._query(expr)}

    def poll(self) -> Frame:
        w = self.window

        def rate(spec: mc.MetricSpec, label: str) -> dict[tuple[str, str], float | None]:
            return self._by(f"sum by (instance, {label}) (rate({spec.prometheus_name}[{w}]))", label)

        def p(q: float, spec: mc.MetricSpec, label: str) -> dict[tuple[str, str], float | None]:
            bucket = f"{spec.prometheus_name}_bucket"
            return self._by(
                f"histogram_quantile({q}, sum by (instance, {label}, le) (rate({bucket}[{w}]))) "
                f"or histogram_quantile({q}, sum by (instance, {label}) (rate({spec.native_series_name}[{w}])))",
                label,
            )

        def total(spec: mc.MetricSpec, label: str) -> str:
            return f"sum by (instance, {label}) ({spec.prometheus_name})"

        states = self._by(f"max by (instance, name) ({mc.BREAKER_STATE.prometheus_name})", "name")
        successes = rate(mc.BREAKER_SUCCESSES, "name")
        failures = rate(mc.BREAKER_FAILURES, "name")
        rejected = rate(mc.BREAKER_REJECTED, "name")
        latency = p(0.99, mc.BREAKER_LATENCY, "name")
        breakers = []
        for key in sorted(set(states) | set(successes) | set(failures)):
            ok, failed = successes.get(key), failures.get(key)
            calls = ok + failed if ok is not None and failed is not None else None
            state = states.get(key)
            breakers.append(
                BreakerRow(
                    instance=key[0],
                    name=key[1],
                    state=int(state) if state is not None else None,
                    calls_per_s=calls,
                    failure_share=failed / calls if calls and failed is not None else None,
                    rejected_per_s=rejected.get(key),
                    p99_s=latency.get(key),
                )
            )
        published = rate(mc.BUS_PUBLISHED, "event_type")
        processed = rate(mc.BUS_PROCESSED, "event_type")
        errors = rate(mc.BUS_HANDLER_ERRORS, "event_type")
        processing = p(0.99, mc.BUS_PROCESSING_DURATION, "event_type")
        backlog = self._by(
            f"{total(mc.BUS_PUBLISHED, 'event_type')} - {total(mc.BUS_PROCESSED, 'event_type')}", "event_type"
        )
        events = [
            EventRow(
                instance=key[0],
                event_type=key[1],
                published_per_s=published.get(key),
                processed_per_s=processed.get(key),
                backlog=max(0.0, b) if (b := backlog.get(key)) is not None else None,
                p99_s=processing.get(key),
                errors_per_s=errors.get(key),
            )
            for key in sorted(set(published) | set(processed))
        ]
        lag = mc.LOOP_LAG
        below = f'{lag.prometheus_name}_bucket{{le="{STALL_SECONDS}"}}'

        def above(over: Callable[[str], str]) -> str:
            """Observations over ``STALL_SECONDS`` per (instance, loop) in ``over(series)``: classic, or native."""
            native = f"sum by (instance, loop) ({over(str(lag.native_series_name))})"
            return (
                f"(sum by (instance, loop) ({over(lag.prometheus_name + '_count')}) "
                f"- sum by (instance, loop) ({over(below)})) "
                f"or (histogram_count({native}) * histogram_fraction({STALL_SECONDS}, +Inf, {native}))"
            )

        stalls = self._by(above(lambda series: series), "loop")
        recent = self._by(above(lambda series: f"increase({series}[{w}])"), "loop")
        lag_p99 = p(0.99, lag, "loop")
        worst = p(1, lag, "loop")
        loops = [
            LoopRow(
                instance=key[0],
                loop=key[1],
                p99_s=lag_p99.get(key),
                worst_s=worst.get(key),
                stalls=stalls.get(key),
                new_stalls=_whole(recent.get(key)),
            )
            for key in sorted(set(stalls) | set(lag_p99))
        ]
        return Frame(
            source=self.description,
            breakers=tuple(breakers),
            events=tuple(events),
            loops=tuple(loops),
            rates_ready=True,
            fleet=True,
        )


def _whole(value: float | None) -> float | None:
    """``increase()`` extrapolates: round a count of stalls to a whole number."""
    return None if value is None or math.isnan(value) else float(round(value))
