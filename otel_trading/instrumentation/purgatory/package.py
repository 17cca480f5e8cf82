"""purgatory's supported range (``_instruments``) and its ends the test matrix runs; imports nothing.

3.0.0 has no files on PyPI: 3.0.1 is both ends.
"""

__all__ = ["NEWEST", "NEWEST_BEFORE", "OLDEST", "_instruments"]
_instruments = ("purgatory >= 3.0.1, < 4",)
OLDEST, NEWEST = "3.0.1", "3.0.1"
NEWEST_BEFORE: dict[str, str] = {}
