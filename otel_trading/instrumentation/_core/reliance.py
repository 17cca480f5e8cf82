"""Structural fingerprints of library functions that otel-trading replaces or wraps, read from source.

Some patches rely on how a library function works inside (which attributes and helpers it uses,
what it calls with which arguments), not only on its name. Each such patch declares, next to it,
the *shape* of the function it was written for, as literals: the number of positional
parameters, the names of all parameters, the names the body refers to and the kind of function
(plain, generator, coroutine, async generator).

The names are read from the function's source with ``ast``, not from its bytecode: the same
library release compiles to other ``co_names`` on other interpreters (3.10, 3.11 and 3.12 order
and fold them differently), and a fingerprint must not tell interpreters apart. They are every
attribute name and every name read but not bound in the function (nested functions included;
private names mangled as the compiler does; annotations left out, so that a release that only
rewrites its type hints keeps its shape).

``shape_differences(installed, shapes)`` says how the installed function differs from the nearest
declared shape, or nothing when it has one of them; a function whose source cannot be read
cannot be decided, and says so.
"""

from __future__ import annotations

import ast
import inspect
import platform
import textwrap
import types
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any, NamedTuple

from otel_trading.instrumentation._core.reporting import warn_once

__all__ = [
    "ASYNC_GENERATOR",
    "COROUTINE",
    "FUNCTION",
    "GENERATOR",
    "Shape",
    "ShapeMismatch",
    "interpreter",
    "library_matches",
    "shape_differences",
    "shape_of",
    "version_of",
]

FUNCTION, GENERATOR, COROUTINE, ASYNC_GENERATOR = "function", "generator", "coroutine", "async generator"

# Fields of an AST node that hold type hints, not code the function runs.
_ANNOTATION_FIELDS = frozenset({"annotation", "returns", "type_comment", "type_params"})


class Shape(NamedTuple):
    """What a function looks like, the same on every interpreter."""

    argcount: int
    #: every parameter name, ``*args``/``**kwargs`` included, in order
    params: tuple[str, ...]
    #: the attribute names and unbound names the body refers to, sorted
    names: tuple[str, ...]
    kind: str


class ShapeMismatch(Exception):
    """A library function is not one otel-trading was written for; the message says what differs."""


def _kind(flags: int) -> str:
    if flags & inspect.CO_ASYNC_GENERATOR:
        return ASYNC_GENERATOR
    if flags & inspect.CO_COROUTINE:
        return COROUTINE
    if flags & inspect.CO_GENERATOR:
        return GENERATOR
    return FUNCTION


def _code_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and everything below it but type hints."""
    yield node
    for field, value in ast.iter_fields(node):
        if field in _ANNOTATION_FIELDS:
            continue
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, ast.AST):
                yield from _code_nodes(child)


def _mangled(name: str, owner: str | None) -> str:
    """``name`` as the compiler spells it inside class ``owner`` (``__x`` -> ``_Owner__x``)."""
    if owner is None or not name.startswith("__") or name.endswith("__") or not owner.strip("_"):
        return name
    return f"_{owner.lstrip('_')}{name}"


def _owner(qualname: str) -> str | None:
    """The class a method is defined in, from its qualified name."""
    parts = qualname.split(".")
    return parts[-2] if len(parts) >= 2 and parts[-2] != "<locals>" else None


def _names(function_node: ast.AST, owner: str | None) -> tuple[str, ...]:
    bound: set[str] = set()
    read: set[str] = set()
    attributes: set[str] = set()
    for node in _code_nodes(function_node):
        if isinstance(node, ast.Attribute):
            attributes.add(node.attr)
        elif isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.ExceptHandler)):
            if node is not function_node and node.name:
                bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return tuple(sorted(_mangled(name, owner) for name in attributes | (read - bound)))


def shape_of(function: Any) -> Shape | None:
    """The shape of ``function``; None when it is not a Python function.

    Raises ``ShapeMismatch`` when its source cannot be read (a build without ``.py`` files).
    """
    if not isinstance(function, types.FunctionType):
        return None
    code = function.__code__
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError) as exc:
        raise ShapeMismatch(f"{function.__qualname__}: its source cannot be read ({exc})") from None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ShapeMismatch(f"{function.__qualname__}: its source is not one function definition")
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    names = _names(node, _owner(function.__qualname__))
    return Shape(code.co_argcount, code.co_varnames[:count], names, _kind(code.co_flags))


def _compare(mine: Shape, theirs: Shape) -> list[str]:
    found: list[str] = []
    if mine.kind != theirs.kind:
        found.append(f"it is a {mine.kind}, not a {theirs.kind}")
    if mine.params != theirs.params or mine.argcount != theirs.argcount:
        found.append(f"parameters {mine.params} (positional {mine.argcount}), not {theirs.params}")
    added, gone = sorted(set(mine.names) - set(theirs.names)), sorted(set(theirs.names) - set(mine.names))
    if added or gone:
        found.append("names " + ", ".join([*(f"+{n}" for n in added), *(f"-{n}" for n in gone)]))
    return found


def shape_differences(installed: Any, shapes: Iterable[Shape], where: str) -> str | None:
    """None when ``installed`` has one of ``shapes``; else what differs from the nearest, naming ``where``."""
    if installed is None:
        return f"{where} is missing"
    try:
        mine = shape_of(installed)
    except ShapeMismatch as exc:
        return str(exc)
    if mine is None:
        return f"{where} is not a Python function ({type(installed).__name__})"
    candidates = [_compare(mine, shape) for shape in shapes]
    if any(not found for found in candidates):
        return None
    nearest = min(candidates, key=len, default=["no shape is declared"])
    return f"{where}: " + "; ".join(nearest)


def version_of(distribution: str) -> str:
    """The installed release of ``distribution`` (its metadata, not a module attribute)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def interpreter() -> str:
    """This interpreter, as a warning names it: ``CPython 3.12.1``."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def library_matches(library: str, distribution: str, checks: Iterable[tuple[str, Any, Iterable[Shape]]]) -> bool:
    """Whether every ``(where, installed, shapes)`` of a library has a declared shape.

    When one does not, the library is to be left out whole (a library counted through some of
    its methods but not others would export known-wrong values): one WARNING names the library,
    its release, the interpreter and every difference.
    """
    found = [d for where, installed, shapes in checks if (d := shape_differences(installed, shapes, where)) is not None]
    if not found:
        return True
    version = version_of(distribution)
    warn_once(
        f"shape:{library}",
        "otel-trading instrumentation: %s %s on %s is left out, no %s metrics are exported: the code differs "
        "from the releases otel-trading was written for: %s",
        library,
        version,
        interpreter(),
        library,
        " | ".join(found),
    )
    return False
