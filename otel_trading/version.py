"""The package version, read by hatchling and reported as the instrumentation scope version."""

__all__ = ["__version__"]

__version__ = "0.1.0"
