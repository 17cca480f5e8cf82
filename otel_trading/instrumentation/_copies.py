"""Instrumented copies of library functions, installed only over the exact code they were copied from.

Recording where a library decides an outcome, with no extra frame on the hot path, means replacing
one of its functions by a copy of it with the recording added (pybreaker's ``CircuitBreaker.call``
is the first such copy, see ``_libraries``). A copy is only right for the code it was made from,
so each target keeps the library source it copied, verbatim, and ``same_code(installed, sources)``
compiles that source and compares it with the installed function: bytecode, names, constants and
nested functions, everything but file names and line numbers. Any difference (another release of
the library, a patch by other code) means the copy is not installed; the target then falls back to
a wrapper, or leaves that part uninstrumented and says so once.
"""

from __future__ import annotations

import textwrap
import types
from collections.abc import Iterable
from typing import Any

__all__ = ["code_of", "same_code"]


def _fingerprint(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(
        _fingerprint(c) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts
    )
    return (
        code.co_code,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        consts,
    )


def code_of(source: str, path: str) -> types.CodeType:
    """The code object of ``path`` (``"Class.method"`` or ``"function"``) defined by ``source``.

    Compiled without inheriting this module's ``from __future__`` flags: annotations of nested
    functions compile to different bytecode under ``annotations``, and the library has none.
    """
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source), f"<copied {path}>", "exec", dont_inherit=True), namespace)
    obj: Any = namespace
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else vars(obj)[part]
    function: Any = obj.fget if isinstance(obj, property) else obj
    code: types.CodeType = function.__code__
    return code


def same_code(installed: Any, sources: Iterable[str], path: str) -> bool:
    """Whether ``installed`` (a function) compiles from one of ``sources`` (each defining ``path``)."""
    code = getattr(installed, "__code__", None)
    if not isinstance(code, types.CodeType):
        return False
    mine = _fingerprint(code)
    return any(_fingerprint(code_of(source, path)) == mine for source in sources)
