"""circuitbreaker's supported range (``_instruments``) and its ends the test matrix runs; imports nothing.

2.0 has no public ``reset()`` (the tests exercise it); 2.1.1 and 2.1.2 are not on PyPI.
"""

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]
_instruments = ("circuitbreaker >= 2.1, < 3",)
OLDEST, NEWEST = "2.1.0", "2.1.3"
NEWEST_BEFORE: dict[str, str] = {}
