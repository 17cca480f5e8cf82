"""The package version, read by hatchling and reported as the instrumentation scope version."""

__version__ = "0.1.0"
