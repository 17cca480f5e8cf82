"""``otel-trading top``: every breaker, event type and event loop of a bot (or a fleet) at a glance.

What Hystrix's dashboard showed for circuit breakers, in a terminal: each breaker's state (OPEN and
HALF_OPEN stand out), calls/s, failure share, rejected/s and p99 latency; each event type's
published/s, processed/s, backlog, p99 processing time and errors/s; each event loop's lag and
stalls. Rates and p99s come from two reads (PromQL's ``rate``/``histogram_quantile``, done here).

Modules: ``model`` (readings, rows, rates and p99s from two reads), ``sources`` (a bot's
``/metrics``; a fleet through PromQL), ``view`` (rich tables, live or plain), ``keys`` (the
terminal's keys) and ``command`` (the subcommand, the live loop and ``--once``). Only ``view`` and
the running command import rich.
"""

from otel_trading.tooling.top.command import DEFAULT_URL, add_subcommand, run_once, run_top
from otel_trading.tooling.top.model import Frame, Reading, frame_between, reading_from_samples
from otel_trading.tooling.top.sources import MetricsEndpoint, PrometheusFleet, SourceError

__all__ = [
    "DEFAULT_URL",
    "Frame",
    "MetricsEndpoint",
    "PrometheusFleet",
    "Reading",
    "SourceError",
    "add_subcommand",
    "frame_between",
    "reading_from_samples",
    "run_once",
    "run_top",
]
