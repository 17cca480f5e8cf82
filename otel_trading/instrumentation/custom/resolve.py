"""Resolving configured custom classes: their module, methods, exception types and state mapping."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import pkgutil
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from otel_trading.instrumentation._core.arguments import ArgRef
from otel_trading.instrumentation._core.reporting import warn_once
from otel_trading.instrumentation.config import (
    BreakerClassSpec,
    ClassRef,
    EventBusClassSpec,
    InstrumentConfig,
    Scalar,
)
from otel_trading.settings import near_miss

__all__ = ["Resolved", "check_imported", "missing_modules", "resolve", "state_mapper", "without_unresolvable"]

_MISSING = object()


# -- resolution -----------------------------------------------------------------------------------


@dataclass
class Resolved:
    spec: BreakerClassSpec | EventBusClassSpec
    cls: type
    functions: dict[str, types.FunctionType]
    rejected: tuple[type[BaseException], ...] = ()
    excluded: tuple[type[BaseException], ...] = ()
    args: dict[str, ArgRef] = field(default_factory=dict)


def _walk(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve_exceptions(refs: tuple[ClassRef, ...], key: str, where: str, problems: list[str]) -> tuple[type, ...]:
    out: list[type] = []
    for ref in refs:
        try:
            exc_type = _walk(importlib.import_module(ref.module), ref.qualname)
        except Exception as exc:
            problems.append(f"{where}: {key} entry {ref} cannot be found: {exc}")
            continue
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            problems.append(f"{where}: {key} entry {ref} is not an exception class")
            continue
        out.append(exc_type)
    return tuple(out)


def resolve(spec: BreakerClassSpec | EventBusClassSpec, module: types.ModuleType) -> tuple[Resolved | None, list[str]]:
    """Find the class and its methods in the imported ``module``; problems name the entry."""
    problems: list[str] = []
    where = spec.where
    try:
        cls = _walk(module, spec.cls.qualname)
    except AttributeError:
        hint = ""
        if spec.cls.module == "__main__":
            hint = (
                " (classes of the script itself exist only once it has run: move the class into a module, "
                "or call instrument_bot() after the class definition)"
            )
        return None, [f"{where}: module {spec.cls.module!r} has no class {spec.cls.qualname!r}{hint}"]
    if not isinstance(cls, type):
        return None, [f"{where}: {spec.cls} is a {type(cls).__name__}, not a class"]
    if isinstance(spec, BreakerClassSpec):
        methods = {m: "call" for m in spec.calls}
        methods.update({m: "enter" for m in spec.enters})
        methods.update({m: "exit" for m in spec.exits})
    else:
        methods = {}
        for role in ("unsubscribe", "subscribe", "dispatch", "publish"):
            for m in getattr(spec, role):
                methods[m] = role
    functions: dict[str, types.FunctionType] = {}
    for name, role in methods.items():
        raw = inspect.getattr_static(cls, name, None)
        if raw is None:
            problems.append(f"{where}: class {spec.cls} has no method {name!r} (configured as {role!r})")
        elif not isinstance(raw, types.FunctionType):
            problems.append(
                f"{where}: {spec.cls}.{name} (configured as {role!r}) is a {type(raw).__name__}, "
                "not a plain method defined with def / async def"
            )
        else:
            functions[name] = raw
    resolved = Resolved(spec, cls, functions)
    if isinstance(spec, BreakerClassSpec):
        resolved.rejected = _resolve_exceptions(spec.rejected, "rejected_exceptions", where, problems)
        resolved.excluded = _resolve_exceptions(spec.excluded, "excluded_exceptions", where, problems)
    else:
        for name, function in functions.items():
            try:
                resolved.args[name] = ArgRef.locate(function, spec.event_arg)
            except ValueError as exc:
                problems.append(f"{where}: {spec.cls}.{name} {exc} (event_arg = {spec.event_arg!r})")
    return (None if problems else resolved), problems


def check_imported(config: InstrumentConfig) -> list[str]:
    """Problems of entries whose module is already imported (reported at start-up, before patching)."""
    problems: list[str] = []
    specs: list[BreakerClassSpec | EventBusClassSpec] = [*config.breakers, *config.event_buses]
    for spec in specs:
        module = sys.modules.get(spec.cls.module)
        if module is not None:
            problems.extend(resolve(spec, module)[1])
    return problems


def without_unresolvable(config: InstrumentConfig) -> tuple[InstrumentConfig, list[str]]:
    """``config`` without the entries whose module is imported but does not resolve, and their problems."""
    problems: list[str] = []
    bad: set[str] = set()
    specs: list[BreakerClassSpec | EventBusClassSpec] = [*config.breakers, *config.event_buses]
    for spec in specs:
        module = sys.modules.get(spec.cls.module)
        found = resolve(spec, module)[1] if module is not None else []
        if found:
            problems.extend(found)
            bad.add(spec.where)
    kept = replace(
        config,
        breakers=tuple(b for b in config.breakers if b.where not in bad),
        event_buses=tuple(b for b in config.event_buses if b.where not in bad),
    )
    return kept, problems


def _search_dirs() -> list[str]:
    """Where the bot's own modules live but ``sys.path`` may not say so yet: under
    ``opentelemetry-instrument`` this code runs before Python puts the script's directory first."""
    dirs = [os.getcwd()]
    script = sys.argv[0] if sys.argv else ""
    if script and os.path.isfile(script):
        dirs.insert(0, os.path.dirname(os.path.abspath(script)))
    return dirs


def _findable(module: str, dirs: list[str]) -> bool:
    top = module.split(".")[0]
    parent = module.rpartition(".")[0]
    try:
        if parent and parent in sys.modules:
            return importlib.util.find_spec(module) is not None
        # Top-level names only: finding them imports nothing.
        return (
            importlib.util.find_spec(top) is not None or importlib.machinery.PathFinder.find_spec(top, dirs) is not None
        )
    except (ImportError, ValueError):
        return True  # let the import itself say what is wrong


def missing_modules(config: InstrumentConfig) -> list[str]:
    """Warnings for configured modules that are not imported and cannot be found (misspelt?).

    Such an entry still waits for its module (it may appear on the path later), but nothing
    would say so otherwise: its module is simply never imported.
    """
    dirs = _search_dirs()
    warnings: list[str] = []
    seen: set[str] = set()
    specs: list[BreakerClassSpec | EventBusClassSpec] = [*config.breakers, *config.event_buses]
    for spec in specs:
        module = spec.cls.module
        if module in seen or module in sys.modules or _findable(module, dirs):
            continue
        seen.add(module)
        top = module.split(".")[0]
        nearby = {m.name for m in pkgutil.iter_modules(dirs)}
        close = near_miss(top, nearby)
        hint = f"did you mean {close!r}? " if close is not None else ""
        warnings.append(
            f"{spec.where}: module {module!r} cannot be found (not on sys.path, nor in the script's directory "
            f"or the working directory): {hint}the entry stays uninstrumented unless the bot imports it"
        )
    return warnings


# -- state mapping --------------------------------------------------------------------------------


def _matches(candidate: Any, configured: Scalar) -> bool:
    if isinstance(configured, bool) or isinstance(candidate, bool):
        return type(candidate) is bool and candidate is configured
    return bool(candidate == configured)


def state_mapper(states: tuple[tuple[Scalar, int], ...], where: str) -> Callable[[Any], int | None]:
    """Maps a state value to 0/1/2: the value itself, else its ``.name``, else its ``.value`` (enums)."""

    def code(value: Any) -> int | None:
        for candidate in (value, getattr(value, "name", _MISSING), getattr(value, "value", _MISSING)):
            if candidate is _MISSING:
                continue
            for configured, state_code in states:
                if _matches(candidate, configured):
                    return state_code
        warn_once(
            f"unknown-state:{where}:{value!r}",
            "otel-trading instrumentation: %s: state value %r matches none of 'states'; "
            "circuit_breaker_state keeps the last known state",
            where,
            value,
        )
        return None

    return code
