"""The releases each library instrumentation supports, and the ones the test matrix runs it on.

One table for every place that states a range: each instrumentor's ``_instruments``, the
``examples``/``bench``/``test`` extras in ``pyproject.toml`` and the README's table are checked
against it (``tests/unit/test_supported_releases.py``), and ``noxfile.py`` installs the oldest and
the newest release of each range from it. A range never claims more than those two ends: its lower
bound is the oldest release tested, its upper bound the next major release after the newest.

It imports nothing, so that ``noxfile.py`` can read it without installing the package.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LIBRARIES", "SupportedLibrary"]


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


LIBRARIES: dict[str, SupportedLibrary] = {
    # 1.4 added success_threshold (and the storage's success counter), which the tests exercise.
    "pybreaker": SupportedLibrary("pybreaker", ">= 1.4, < 2", oldest="1.4.0", newest="1.4.1"),
    # 1.0 had other state classes and locked inside call().
    "aiobreaker": SupportedLibrary("aiobreaker", ">= 1.1, < 2", oldest="1.1.0", newest="1.2.0"),
    # 2.0 has no public reset() (the tests exercise it); 2.1.1 and 2.1.2 are not on PyPI.
    "circuitbreaker": SupportedLibrary("circuitbreaker", ">= 2.1, < 3", oldest="2.1.0", newest="2.1.3"),
    # 3.0.0 has no files on PyPI: 3.0.1 is both ends.
    "purgatory": SupportedLibrary("purgatory", ">= 3.0.1, < 4", oldest="3.0.1", newest="3.0.1"),
    # 12.0 has no wait_for_complete() (the example bot and the tests await it); 14.0 and later need
    # Python >= 3.12.
    "pyee": SupportedLibrary(
        "pyee",
        ">= 12.1, < 17",
        oldest="12.1.0",
        newest="16.1.0",
        newest_before=(("3.10", "13.0.1"), ("3.11", "13.0.1")),
    ),
}
