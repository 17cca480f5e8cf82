"""What a doctor check concludes: a status, a detail, a fix, and the exit status they add up to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["CheckResult", "Status", "exit_status"]


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. ``fix`` is a concrete next step (empty when nothing is to be done)."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def exit_status(results: Iterable[CheckResult], strict: bool = False) -> int:
    """1 if a check failed (or, with ``strict``, warned), else 0."""
    bad = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    return 1 if any(r.status in bad for r in results) else 0
