"""Argument checks shared by every public constructor: errors name the argument and its range."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

__all__ = ["check_bool", "check_int", "check_name", "check_number", "check_port", "check_rate"]


def check_name(arg: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{arg} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{arg} must be a non-empty string")
    return value


def check_int(arg: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{arg} must be >= {minimum}{upper}, got {value}")
    return value


def check_number(arg: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{arg} must be a number of seconds, got {type(value).__name__}")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float < minimum:
        raise ValueError(f"{arg} must be a finite number >= {minimum}, got {value!r}")
    return as_float


def check_rate(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{arg} must be a number in [0, 1], got {type(value).__name__}")
    as_float = float(value)
    if not 0.0 <= as_float <= 1.0:
        raise ValueError(f"{arg} must be in [0, 1], got {value!r}")
    return as_float


def check_bool(arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, got {type(value).__name__}")
    return value


def check_port(arg: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int port number, got {type(value).__name__}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{arg} must be a port in 0..65535 (0 picks a free one), got {value}")
    return value
