"""Reading the instrumented code's arguments and objects: argument positions, attribute paths, event labels."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ArgRef", "kwarg_or_arg", "label_of", "read_path"]


def read_path(obj: Any, path: tuple[str, ...]) -> Any:
    """``obj.a.b`` for ``path == ("a", "b")``; a bound method at the end is called with no arguments."""
    value = obj
    for part in path:
        value = getattr(value, part)
    if inspect.ismethod(value) or inspect.isbuiltin(value):
        value = value()
    return value


def label_of(value: Any) -> str:
    """The ``event_type`` label of a published value: a topic string, a class, an enum member, an event."""
    if isinstance(value, str):
        return value
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, enum.Enum):
        return value.name
    return type(value).__name__


@dataclass(frozen=True)
class ArgRef:
    """Where one argument of a wrapped method is: by position (not counting ``self``) and/or keyword."""

    position: int | None
    keyword: str | None

    def get(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        if self.position is not None and self.position < len(args):
            return True, args[self.position]
        if self.keyword is not None and self.keyword in kwargs:
            return True, kwargs[self.keyword]
        return False, None

    @classmethod
    def locate(cls, function: Callable[..., Any], which: int | str) -> ArgRef:
        """Resolve ``which`` (an index after ``self``, or a parameter name) against ``function``."""
        params = list(inspect.signature(function).parameters.values())[1:]  # drop self
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        has_varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        if isinstance(which, int):
            if which < len(params) and params[which].kind in positional:
                p = params[which]
                return cls(which, p.name if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else None)
            if has_varargs and all(p.kind in positional for p in params[: min(which, len(params))]):
                return cls(which, None)
            raise ValueError(f"has no positional argument #{which}")
        for i, p in enumerate(params):
            if p.name == which:
                if p.kind in positional:
                    return cls(i, which if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else None)
                if p.kind is inspect.Parameter.KEYWORD_ONLY:
                    return cls(None, which)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return cls(None, which)
        raise ValueError(f"has no argument named {which!r}")


def kwarg_or_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """An argument passed by position ``index`` or keyword ``name``."""
    if index < len(args):
        return args[index]
    return kwargs.get(name, default)
