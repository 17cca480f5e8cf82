"""``python -m otel_trading`` runs the CLI."""

from otel_trading.tooling.cli import main

raise SystemExit(main())
