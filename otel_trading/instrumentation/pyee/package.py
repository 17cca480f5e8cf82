"""pyee's supported range (``_instruments``) and its ends the test matrix runs; imports nothing.

12.0 has no ``wait_for_complete()`` (the example bot and the tests await it); 14.0 and later need
Python >= 3.12, so 3.10 and 3.11 get 13.0.1 (``NEWEST_BEFORE``: the newest release an interpreter
older than ``NEWEST`` allows).
"""

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]
_instruments = ("pyee >= 12.1, < 17",)
OLDEST, NEWEST = "12.1.0", "16.1.0"
NEWEST_BEFORE: dict[str, str] = {"3.10": "13.0.1", "3.11": "13.0.1"}
