"""The releases each library home supports (its ``package.py``), as one table for checks and the test matrix."""

from __future__ import annotations

import importlib
from typing import NamedTuple

from otel_trading.instrumentation.libraries import LIBRARIES as NAMES

__all__ = ["LIBRARIES", "SupportedLibrary", "supported"]


class SupportedLibrary(NamedTuple):
    #: the distribution's name on PyPI
    distribution: str
    #: what ``_instruments`` and the extras claim (requirement specifiers)
    range: str
    #: the oldest release in ``range``, tested on the oldest interpreter that can install it
    oldest: str
    #: the newest release, tested on every interpreter that can install it
    newest: str
    #: the newest release an interpreter older than ``newest`` allows: ``{"3.11": "13.0.1"}``
    newest_before: tuple[tuple[str, str], ...] = ()

    def requirement(self) -> str:
        return f"{self.distribution} {self.range}"

    def newest_for(self, python: str) -> str:
        """The newest release pip installs on CPython ``python`` ("3.12")."""
        return dict(self.newest_before).get(python, self.newest)


def supported(name: str) -> SupportedLibrary:
    """What the home of library ``name`` declares in its ``package.py``."""
    package = importlib.import_module(f"otel_trading.instrumentation.{name}.package")
    (requirement,) = package._instruments
    distribution, _, spec = requirement.partition(" ")
    return SupportedLibrary(
        distribution, spec.strip(), package.OLDEST, package.NEWEST, tuple(sorted(package.NEWEST_BEFORE.items()))
    )


LIBRARIES: dict[str, SupportedLibrary] = {name: supported(name) for name in NAMES}
