"""circuitbreaker: the releases its instrumentation supports and the ones the test matrix runs it on; imports nothing.

A range never claims more than its two tested ends: its lower bound is the oldest release tested,
its upper bound the next major release after the newest.
"""

from __future__ import annotations

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]

# 2.0 has no public reset() (the tests exercise it); 2.1.1 and 2.1.2 are not on PyPI.
_instruments: tuple[str, ...] = ("circuitbreaker >= 2.1, < 3",)
#: tested on the oldest interpreter that can install it
OLDEST = "2.1.0"
#: tested on every interpreter that can install it
NEWEST = "2.1.3"
#: the newest release an interpreter older than NEWEST allows, by interpreter ("3.11")
NEWEST_BEFORE: dict[str, str] = {}
