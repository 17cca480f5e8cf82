"""pyee: the releases its instrumentation supports and the ones the test matrix runs it on; imports nothing.

A range never claims more than its two tested ends: its lower bound is the oldest release tested,
its upper bound the next major release after the newest.
"""

from __future__ import annotations

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]

# 12.0 has no wait_for_complete() (the example bot and the tests await it); 14.0 and later need Python >= 3.12.
_instruments: tuple[str, ...] = ("pyee >= 12.1, < 17",)
#: tested on the oldest interpreter that can install it
OLDEST = "12.1.0"
#: tested on every interpreter that can install it
NEWEST = "16.1.0"
#: the newest release an interpreter older than NEWEST allows, by interpreter ("3.11")
NEWEST_BEFORE: dict[str, str] = {"3.10": "13.0.1", "3.11": "13.0.1"}
