"""Operator tooling behind the ``otel-trading`` command; the runtime never imports it.

``cli`` is the command itself. Each subcommand lives in its own module: ``demo`` (a simulated bot),
``doctor`` (pipeline checks), ``dashboard`` (the Grafana dashboard generator), ``grafana_backup``
(dashboard backup and restore) and ``metrics_reference`` (the README's metrics table).
``import otel_trading`` loads none of them.
"""

__all__: list[str] = []
