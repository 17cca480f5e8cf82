"""purgatory: the releases its instrumentation supports and the ones the test matrix runs it on; imports nothing.

A range never claims more than its two tested ends: its lower bound is the oldest release tested,
its upper bound the next major release after the newest.
"""

from __future__ import annotations

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]

# 3.0.0 has no files on PyPI: 3.0.1 is both ends.
_instruments: tuple[str, ...] = ("purgatory >= 3.0.1, < 4",)
#: tested on the oldest interpreter that can install it
OLDEST = "3.0.1"
#: tested on every interpreter that can install it
NEWEST = "3.0.1"
#: the newest release an interpreter older than NEWEST allows, by interpreter ("3.11")
NEWEST_BEFORE: dict[str, str] = {}
