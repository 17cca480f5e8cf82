"""The package version, read by the build (setuptools) and reported as the instrumentation scope version."""

__all__ = ["__version__"]

__version__ = "0.1.0"
