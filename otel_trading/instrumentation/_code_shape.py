"""Structural fingerprints of library functions that otel-trading replaces or wraps.

Some patches rely on how a library function works inside (which attributes and helpers it uses,
what it calls with which arguments), not only on its name. Each such patch declares, next to it,
the *shape* of the function it was written for, as literals: the number of positional
parameters, the names of all parameters, the global and attribute names the body uses
(``__code__.co_names``) and the kind of function (plain, generator, coroutine, async
generator). ``has_shape(installed, shapes)`` compares the installed function with those shapes;
another shape (another release of the library, or a patch by other code) means the patch is
not installed, and the caller says so once.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["ASYNC_GENERATOR", "COROUTINE", "FUNCTION", "GENERATOR", "Shape", "has_shape", "shape_of"]

FUNCTION, GENERATOR, COROUTINE, ASYNC_GENERATOR = "function", "generator", "coroutine", "async generator"


class Shape(NamedTuple):
    """What a function looks like from outside its bytecode."""

    argcount: int
    #: every parameter name, ``*args``/``**kwargs`` included, in order
    params: tuple[str, ...]
    #: ``__code__.co_names``: globals, attributes and methods the body refers to
    names: tuple[str, ...]
    kind: str


def _kind(flags: int) -> str:
    if flags & inspect.CO_ASYNC_GENERATOR:
        return ASYNC_GENERATOR
    if flags & inspect.CO_COROUTINE:
        return COROUTINE
    if flags & inspect.CO_GENERATOR:
        return GENERATOR
    return FUNCTION


def shape_of(function: Any) -> Shape | None:
    """The shape of ``function``; None when it is not a Python function."""
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return Shape(code.co_argcount, code.co_varnames[:count], code.co_names, _kind(code.co_flags))


def has_shape(installed: Any, shapes: Iterable[Shape]) -> bool:
    """Whether ``installed`` has one of ``shapes``."""
    mine = shape_of(installed)
    return mine is not None and mine in tuple(shapes)
