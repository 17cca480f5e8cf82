"""``otel-trading doctor``: walk the metrics pipeline the way the monitoring guide's Troubleshooting does.

Each check returns a :class:`CheckResult` (name, status, detail, fix), in pipeline order:

==================== ===================================================== ==========================
check                question                                              guide step
==================== ===================================================== ==========================
metrics_endpoint     does /metrics answer, in Prometheus format?           "Verify the metrics server"
export_path          the bot's own exporter, or a collector's (and then?)  (collector/README.md)
documented_metrics   the guide's 10 and the Reference's others (why not)?  "Check if metrics enabled"
container_reachable  can a container reach it, or does it bind loopback?   (compose/Kubernetes set-ups)
prometheus_target    does Prometheus list the target, and is it up?        "Check Prometheus targets"
alert_rules          are the alert rules loaded and evaluating?            Alerting Setup
firing_alerts        which alerts fire now, and about what (breaker, bot)? Alerting Setup
alertmanager         is Alertmanager up, and does Prometheus send to it?   Notification Channels
cardinality          series per trading metric; folded label values        "High Resource Usage"
event_loop           was the bot's event loop blocked (lag over 100 ms)?   (otel-trading's own metric)
==================== ===================================================== ==========================

Checks needing a URL that was not given report ``skip``. Without ``--metrics-url``, the doctor
tries the default URL, and when nothing answers there (and ``--prometheus-url`` is given) the
target Prometheus scrapes otel-trading metrics from. The exit status is 0 when no check
fails (1 otherwise; ``--strict`` also fails on warnings). ``--json`` prints the same results for
machines. HTTP goes through urllib with short timeouts and no proxy, and only to the given URLs
(plus, without ``--metrics-url``, the bot's scrape URL as Prometheus reports it): container
reachability is judged from the endpoint's host, never by probing other addresses.

Modules: ``results`` (statuses, verdicts, exit status), ``context`` (options and the cached scrape),
``http_client``, ``host_addresses`` (loopback and this host's interfaces), ``checks``, ``report``
(text and JSON) and ``command`` (the subcommand's arguments).
"""

from otel_trading.tooling.doctor.checks import CHECKS, assess_bind, run_doctor
from otel_trading.tooling.doctor.command import add_subcommand, default_metrics_url
from otel_trading.tooling.doctor.context import DoctorOptions
from otel_trading.tooling.doctor.report import render_json, render_text
from otel_trading.tooling.doctor.results import CheckResult, Status, exit_status

__all__ = [
    "CHECKS",
    "CheckResult",
    "DoctorOptions",
    "Status",
    "add_subcommand",
    "assess_bind",
    "default_metrics_url",
    "exit_status",
    "render_json",
    "render_text",
    "run_doctor",
]
