"""A traced bot that knows nothing of otel-trading: pybreaker calls, each in a span, with its own histogram.

Run it under ``opentelemetry-instrument`` (which sets up the tracer and meter providers from the
``OTEL_*`` variables and loads otel-trading's pybreaker instrumentation through its entry point):

    opentelemetry-instrument python traced_pybreaker_bot.py TRACE_ID_FILE

Until SIGTERM, every ~20 ms it opens a span, calls the venue through a pybreaker breaker named
``venue-traced``, records the call's duration into its own plain OpenTelemetry API histogram
``bot.order.duration`` (unit ``s``) inside the same span, and appends the span's trace id (32 hex
digits) to TRACE_ID_FILE. ``READY`` is printed after the first call.
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

import pybreaker
from opentelemetry import metrics, trace
from opentelemetry.trace import format_trace_id

BREAKER_NAME = "venue-traced"


def place_order() -> str:
    time.sleep(0.002)  # well above the first latency bucket
    return "filled"


def main(trace_id_file: str) -> int:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    tracer = trace.get_tracer("traced-bot")
    duration = metrics.get_meter("traced-bot").create_histogram("bot.order.duration", unit="s")
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, name=BREAKER_NAME)
    calls = 0
    with open(trace_id_file, "a") as ids:
        while not stopping:
            with tracer.start_as_current_span("place-order") as span:
                context = span.get_span_context()
                if not (context.is_valid and context.trace_flags.sampled):
                    print(f"ERROR: the span is not sampled: {context}", flush=True)
                    return 1
                start = time.perf_counter()
                breaker.call(place_order)
                duration.record(time.perf_counter() - start)
                ids.write(format_trace_id(context.trace_id) + "\n")
                ids.flush()
            calls += 1
            if calls == 1:
                print("READY", flush=True)
            time.sleep(0.02)
    print(f"STOPPED after {calls} calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
