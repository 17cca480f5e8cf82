"""cloudflare/pint's offline checks on the alert rules: clean, and able to find a real problem."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..realprocs import REPO, pint_binary

RULES = REPO / "deploy" / "prometheus" / "rules" / "trading_alerts.yml"


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pint_binary(), "--offline", "--no-color", "lint", str(path)], capture_output=True, text=True, timeout=120
    )


def test_the_alert_rules_pass_pints_offline_checks() -> None:
    res = _lint(RULES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Checking Prometheus rules" in res.stderr + res.stdout


def test_pint_reports_an_annotation_using_a_label_the_query_drops(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yml"
    bad.write_text(
        "groups:\n"
        "  - name: bad\n"
        "    rules:\n"
        "      - alert: Broken\n"
        "        expr: sum by (name) (rate(circuit_breaker_failures_total[5m])) > 0\n"
        "        annotations:\n"
        '          summary: "{{ $labels.event_type }} is dropped by the sum"\n'
    )
    res = _lint(bad)
    assert res.returncode != 0
    assert "event_type" in res.stdout + res.stderr
