"""The Grafana "Trading System" dashboard, generated from the metric contract.

Every metric name, label and histogram series in the dashboard comes from
:mod:`otel_trading.metric_contract`, so the dashboard cannot drift from what the code exports.
The output is deterministic (insertion-ordered keys, fixed ids and layout, trailing newline), so a
committed copy can be compared byte for byte with :func:`render_dashboard`:

    otel-trading dashboard                      # print the JSON on stdout
    otel-trading dashboard --out FILE           # write it to FILE
    otel-trading dashboard --check FILE         # exit 1 if FILE is missing or stale

Queries aggregate with ``sum by``/``max by`` over the contract's labels only, so the extra labels a
scrape adds (``job``, ``instance``, the in-process exporter's ``otel_scope_*``) neither split nor
duplicate series. Rates use ``$__rate_interval``; the provisioned data source sets ``timeInterval``
to the scrape interval, which that variable needs.

Histogram panels read classic and native histograms alike: each query is the classic form over the
``_bucket``/``_count`` series ``or`` its twin over the native series Prometheus 3 stores for an
exponential histogram (``histogram_quantile`` of the native series; ``histogram_count`` times
``histogram_fraction`` for the stall count). The latency quantiles ask Grafana for exemplars.

:func:`panel_queries` lists every (panel title, PromQL) pair and :func:`concrete_query` replaces the
Grafana variables, so tests can evaluate each panel query against a real Prometheus.

Modules: ``promql`` (queries checked against the contract), ``templating`` (dashboard variables),
``grafana_model`` (Grafana's JSON pieces), ``panels``, ``layout`` (grid and ids), ``generator`` (the
whole dashboard) and ``command`` (the subcommand).
"""

from otel_trading.tooling.dashboard.command import add_subcommand
from otel_trading.tooling.dashboard.generator import (
    DASHBOARD_TITLE,
    DASHBOARD_UID,
    build_dashboard,
    panel_queries,
    render_dashboard,
    write_dashboard,
)
from otel_trading.tooling.dashboard.panels import QUANTILES, STATE_NAMES
from otel_trading.tooling.dashboard.templating import DATASOURCE_UID, concrete_query

__all__ = [
    "DASHBOARD_TITLE",
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "QUANTILES",
    "STATE_NAMES",
    "add_subcommand",
    "build_dashboard",
    "concrete_query",
    "panel_queries",
    "render_dashboard",
    "write_dashboard",
]
