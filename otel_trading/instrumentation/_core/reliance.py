"""What each library's hooks rely on, declared and checked before anything is patched.

A library home declares a ``Reliance``: every library function its hooks replace, wrap or call
(``Function``, with the parameters it reads arguments by and, where a hook relies on how the
function works inside, its *shape*), and every attribute of the library's objects a hook reads to
decide an outcome (``Attribute``: found on the class, or assigned to ``self`` in the source of the
methods that set it). ``Reliance.holds()`` checks all of it against the installed release; on any
difference the library is left out whole, with one WARNING naming the library, its release, the
interpreter and every difference: a library counted on a misread attribute would export
known-wrong values. Everything is checked from source at instrument time, attributes set during a
call included (the source of the method that sets them is read), so no check waits for a run.

Shapes: some patches rely on how a library function works inside (which attributes and helpers it uses,
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
import importlib
import importlib.util
import inspect
import platform
import sys
import textwrap
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, NamedTuple

from otel_trading.instrumentation._core.reporting import warn_once

__all__ = [
    "ASYNC_GENERATOR",
    "COROUTINE",
    "FUNCTION",
    "GENERATOR",
    "Attribute",
    "Function",
    "Reliance",
    "Shape",
    "ShapeMismatch",
    "interpreter",
    "shape_differences",
    "shape_of",
    "version_of",
]

FUNCTION, GENERATOR, COROUTINE, ASYNC_GENERATOR = "function", "generator", "coroutine", "async generator"
_MISSING = object()

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


# -- declared reliance --------------------------------------------------------------------------------


def _split(where: str) -> tuple[str, tuple[str, ...]]:
    module, _, path = where.partition(":")
    return module, tuple(path.split("."))


def _resolve(module_name: str, path: tuple[str, ...]) -> tuple[Any, str | None]:
    """The object at ``module:path`` (class attributes looked up statically, private names
    mangled), or None and why not."""
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"{module_name} cannot be imported ({exc})"
    owner: str | None = None
    for part in path:
        name = _mangled(part, owner)
        try:
            value = inspect.getattr_static(value, name)
        except AttributeError:
            return None, f"{module_name}:{'.'.join(path)} is missing"
        owner = part if isinstance(value, type) else None
    return value, None


def _assigned_to_self(function: Any) -> set[str]:
    """The attributes ``function``'s source assigns on its first parameter (mangled names)."""
    if not isinstance(function, types.FunctionType):
        return set()
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return set()
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.args.args:
        return set()
    this = node.args.args[0].arg
    owner = _owner(function.__qualname__)
    found: set[str] = set()
    for child in _code_nodes(node):
        targets: list[ast.AST] = []
        if isinstance(child, ast.Assign):
            targets = list(child.targets)
        elif isinstance(child, (ast.AnnAssign, ast.AugAssign)):
            targets = [child.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == this:
                    found.add(_mangled(sub.attr, owner))
    return found


@dataclass(frozen=True)
class Function:
    """A library function a hook replaces, wraps or calls, at ``"module:Class.name"``.

    ``params``: the parameter names a hook reads arguments by (checked when given); ``shapes``:
    the shapes it may have when a hook relies on how it works inside; ``optional``: its module may
    be missing (then nothing of it is relied on), but when it is there, all of it must be.
    """

    where: str
    params: tuple[str, ...] | None = None
    shapes: tuple[Shape, ...] = ()
    optional: bool = False

    @property
    def name(self) -> str:
        return _split(self.where)[1][-1]

    def differences(self) -> list[str]:
        module, path = _split(self.where)
        if self.optional and importlib.util.find_spec(module) is None:
            return []
        found, why = _resolve(module, path)
        label = ".".join(path)
        if found is None:
            return [why or f"{label} is missing"]
        if isinstance(found, (staticmethod, classmethod)):
            found = found.__func__
        if not isinstance(found, types.FunctionType):
            return [f"{label} is a {type(found).__name__}, not a function"]
        out: list[str] = []
        if self.params is not None:
            params = found.__code__.co_varnames[: len(self.params)]
            if params != self.params:
                out.append(f"{label} has parameters {params}, not {self.params}")
        if self.shapes:
            differs = shape_differences(found, self.shapes, label)
            if differs is not None:
                out.append(differs)
        return out


@dataclass(frozen=True)
class Attribute:
    """An attribute of a library's objects a hook reads, at ``"module:Class.name"``.

    ``set_by``: the methods of the class (looked up through its bases) whose source assigns it to
    ``self``, one of which must; empty: it is found on the class itself (a property, a method, a
    class attribute) or, for ``"module:NAME"``, in the module.
    """

    where: str
    set_by: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return _split(self.where)[1][-1]

    def differences(self) -> list[str]:
        module, path = _split(self.where)
        label = ".".join(path)
        if not self.set_by:
            _, why = _resolve(module, path)
            return [] if why is None else [why]
        cls, why = _resolve(module, path[:-1])
        if why is not None or not isinstance(cls, type):
            return [why or f"{'.'.join(path[:-1])} is not a class"]
        wanted = _mangled(path[-1], path[-2])
        for method in self.set_by:
            try:
                function = inspect.getattr_static(cls, _mangled(method, path[-2]))
            except AttributeError:
                continue
            if wanted in _assigned_to_self(function):
                return []
        return [f"{label} is not set by {' or '.join(self.set_by)}"]


@dataclass(frozen=True)
class Reliance:
    """Everything of one library (its distribution's name) that its hooks rely on."""

    library: str
    functions: tuple[Function, ...] = ()
    attributes: tuple[Attribute, ...] = ()

    def names(self) -> tuple[str, ...]:
        """Every relied-on name the library chose, as its source spells it (for drift tests and the
        docs): classes, functions, attributes and parameters; the language's own ``__dunder__``
        names are left out."""
        wheres = [f.where for f in self.functions] + [a.where for a in self.attributes]
        found = {part for where in wheres for part in _split(where)[1]}
        for function in self.functions:
            found.update(p for p in function.params or () if p not in ("self", "args", "kwargs"))
        for where in wheres:
            _resolve(*_split(where))  # imports its module, for _defines
        shaped = {n for function in self.functions for shape in function.shapes for n in shape.names}
        found.update(n for n in shaped - found if "__" not in n and self._defines(n))
        return tuple(sorted(n for n in found if not (n.startswith("__") and n.endswith("__"))))

    def _defines(self, name: str) -> bool:
        """Whether the library's loaded modules define ``name``: a global of their own, or an
        attribute of one of their classes (in its ``__dict__`` or assigned to ``self``)."""
        for module_name, module in list(sys.modules.items()):
            if module is None or (module_name != self.library and not module_name.startswith(f"{self.library}.")):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, type) and value.__module__ == module_name:
                    functions = [f for f in vars(value).values() if isinstance(f, types.FunctionType)]
                    if name in vars(value) or any(name in _assigned_to_self(f) for f in functions):
                        return True
            own = vars(module).get(name, _MISSING)
            if own is not _MISSING and getattr(own, "__module__", module_name) == module_name:
                return not isinstance(own, types.ModuleType)
        return False

    def differences(self) -> list[str]:
        found = [d for function in self.functions for d in function.differences()]
        found += [d for attribute in self.attributes for d in attribute.differences()]
        return list(dict.fromkeys(found))  # a missing class is named once

    def holds(self) -> bool:
        """True when the installed release has everything declared; else the library is to be left
        out, and one WARNING (once per process) names the library, release, interpreter and every
        difference."""
        found = self.differences()
        if not found:
            return True
        warn_once(
            f"reliance:{self.library}",
            "otel-trading instrumentation: %s %s on %s is left out, no %s metrics are exported: it differs "
            "from the releases otel-trading was written for: %s",
            self.library,
            version_of(self.library),
            interpreter(),
            self.library,
            " | ".join(found),
        )
        return False
