"""pybreaker's supported range (``_instruments``) and its ends the test matrix runs; imports nothing.

1.4 added ``success_threshold`` (and the storage's success counter), which the tests exercise.
"""

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]
_instruments = ("pybreaker >= 1.4, < 2",)
OLDEST, NEWEST = "1.4.0", "1.4.1"
NEWEST_BEFORE: dict[str, str] = {}
