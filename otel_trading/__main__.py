"""``python -m otel_trading`` runs the CLI."""

from otel_trading.cli import main

raise SystemExit(main())
