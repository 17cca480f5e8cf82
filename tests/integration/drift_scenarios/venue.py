"""What every breaker drift scenario shares: the venue's calls and how the bot records each outcome.

Not renamed with a simulated release (it names no library): the library's rejection error is
handed in by the scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class VenueDown(Exception):
    """A failure the breaker counts."""


class InsufficientFunds(Exception):
    """A business error the breaker excludes (or does not count)."""


def ok() -> int:
    return 1


def down() -> int:
    raise VenueDown("venue down")


def funds() -> int:
    raise InsufficientFunds("no funds")


def order(kind: str) -> int:
    """An order the venue takes ("ok"), fails ("down") or refuses for the business ("funds")."""
    return {"down": down, "funds": funds}.get(kind, ok)()


def ticks() -> Iterator[int]:
    yield 1
    yield 2


async def ok_async() -> int:
    return 1


async def down_async() -> int:
    raise VenueDown("venue down")


def recorder(seen: list[Any], refused: type[BaseException]) -> Callable[[Callable[[], Any]], None]:
    """``attempt(call)``: runs ``call`` and appends what the bot saw to ``seen`` (a generator's sum)."""

    def attempt(call: Callable[[], Any]) -> None:
        try:
            result = call()
            if isinstance(result, Iterator):  # a generator call: its outcome comes at its end
                result = sum(result)
        except VenueDown:
            seen.append("down")
        except InsufficientFunds:
            seen.append("funds")
        except refused:
            seen.append("refused")
        else:
            seen.append(result)

    return attempt
