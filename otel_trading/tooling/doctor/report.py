"""The doctor's report: one line per check with its fix for people, or JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from otel_trading.tooling.doctor.context import DoctorOptions
from otel_trading.tooling.doctor.http_client import redact
from otel_trading.tooling.doctor.results import CheckResult, Status, exit_status

__all__ = ["render_json", "render_text"]


def render_text(results: Sequence[CheckResult], options: DoctorOptions) -> str:
    marks = {Status.OK: " ok ", Status.WARN: "warn", Status.FAIL: "FAIL", Status.SKIP: "skip"}
    width = max(len(r.name) for r in results)
    lines = [f"otel-trading doctor: {redact(options.metrics_url)}"]
    for r in results:
        lines.append(f"[{marks[r.status]}] {r.name:<{width}}  {r.detail}")
        if r.fix and r.status is not Status.OK:
            lines.append(f"       {'':<{width}}  fix: {r.fix}")
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    lines.append(
        f"{counts[Status.FAIL]} failed, {counts[Status.WARN]} warnings, {counts[Status.OK]} ok, "
        f"{counts[Status.SKIP]} skipped. Also check the bot's log for 'otel-trading' errors."
    )
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[CheckResult], options: DoctorOptions, strict: bool = False) -> str:
    status = exit_status(results, strict)
    payload = {
        "healthy": status == 0,
        "exit_status": status,
        "metrics_url": redact(options.metrics_url),
        "prometheus_url": redact(options.prometheus_url) if options.prometheus_url else None,
        "alertmanager_url": redact(options.alertmanager_url) if options.alertmanager_url else None,
        "checks": [{**asdict(r), "status": r.status.value} for r in results],
    }
    return json.dumps(payload, indent=2) + "\n"
