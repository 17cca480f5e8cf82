"""aiobreaker's supported range (``_instruments``) and its ends the test matrix runs; imports nothing.

1.0 had other state classes and locked inside ``call()``.
"""

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]
_instruments = ("aiobreaker >= 1.1, < 2",)
OLDEST, NEWEST = "1.1.0", "1.2.0"
NEWEST_BEFORE: dict[str, str] = {}
