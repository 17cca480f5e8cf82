"""Plumbing shared by every instrumentation target.

- ``Patcher`` swaps class attributes for wrappers and puts back exactly what was in each class
  ``__dict__`` (or removes the entry when there was none).
- ``ImportWatcher`` runs a callback right after a module is first imported, so a library or a bot
  module is patched when the bot imports it, never imported early by us. It is a removable
  ``sys.meta_path`` finder, and the module's own loader is put back once the module has run.
- ``WeakIdentityMap`` attaches our per-instance state to objects without touching them: no
  attribute is added, and unhashable instances work.
- ``report`` logs a failure of our own code once with its traceback: instrumentation never raises
  into the bot.
"""

from __future__ import annotations

import enum
import functools
import importlib.abc
import importlib.util
import inspect
import logging
import sys
import threading
import types
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import wrapt

__all__ = [
    "ArgRef",
    "ImportWatcher",
    "Patcher",
    "V",
    "WeakIdentityMap",
    "Wrapper",
    "keep_by_id",
    "kwarg_or_arg",
    "label_of",
    "read_path",
    "report",
    "reset_reports",
    "warn_once",
]

_logger = logging.getLogger("otel_trading.instrumentation")

V = TypeVar("V")

#: ``wrapper(wrapped, instance, args, kwargs)``, the wrapt convention.
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_reported: set[str] = set()
_reported_lock = threading.Lock()


def report(site: str, exc: BaseException) -> None:
    """Log a failure inside instrumentation code: first time per site with traceback, then DEBUG."""
    with _reported_lock:
        first = site not in _reported
        _reported.add(site)
    if first:
        _logger.error(
            "otel-trading instrumentation: %s failed; the instrumented code is unaffected "
            "(further failures here are logged at DEBUG)",
            site,
            exc_info=exc,
        )
    else:
        _logger.debug("otel-trading instrumentation: %s failed again: %r", site, exc)


def reset_reports() -> None:
    """Forget which failures were logged (each ``instrument()`` logs its first failures again)."""
    with _reported_lock:
        _reported.clear()


def warn_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    """A configuration-level warning (or note, at another ``level``), logged once per ``key``."""
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    _logger.log(level, message, *args)


# -- patching ---------------------------------------------------------------------------------------


@dataclass
class _Patch:
    owner: type
    name: str
    had_own: bool
    previous: Any
    proxy: Any


class Patcher:
    """Patches plain functions found on classes; ``restore()`` undoes every patch exactly.

    ``replace`` installs a plain function built by ``factory(original)`` (with the original's
    ``__name__``, ``__qualname__``, ``__doc__``, ``__wrapped__`` and so its signature): ~0.3 us per
    call. ``wrap`` installs a ``wrapt.FunctionWrapper``, which also proxies ``__code__`` (so e.g.
    ``inspect.isgeneratorfunction`` is unchanged) but costs ~1 us per call: used off the hot path.
    """

    def __init__(self) -> None:
        self._applied: list[_Patch] = []

    def _original(self, owner: type, name: str) -> types.FunctionType:
        raw = inspect.getattr_static(owner, name)
        if not isinstance(raw, types.FunctionType):
            where = f"{owner.__module__}:{owner.__qualname__}.{name}"
            raise TypeError(f"{where} is a {type(raw).__name__}, not a function")
        return raw

    def _install(self, owner: type, name: str, patched: Any) -> None:
        own = vars(owner)
        patch = _Patch(owner, name, name in own, own.get(name), patched)
        setattr(owner, name, patched)
        self._applied.append(patch)

    def replace(self, owner: type, name: str, factory: Callable[[types.FunctionType], Callable[..., Any]]) -> None:
        """Set ``owner.name`` (looked up through the MRO) to ``factory(original)``, on ``owner`` itself."""
        raw = self._original(owner, name)
        self._install(owner, name, functools.update_wrapper(factory(raw), raw))

    def replace_setter(
        self, owner: type, name: str, factory: Callable[[Callable[[Any, Any], None]], Callable[[Any, Any], None]]
    ) -> None:
        """Set ``owner.name``, a property, to a copy whose setter is ``factory(original setter)``."""
        raw = inspect.getattr_static(owner, name)
        if not isinstance(raw, property) or raw.fset is None:
            raise TypeError(f"{owner.__module__}:{owner.__qualname__}.{name} is not a settable property")
        setter = functools.update_wrapper(factory(raw.fset), raw.fset)
        self._install(owner, name, property(raw.fget, setter, raw.fdel, raw.__doc__))

    def wrap(self, owner: type, name: str, wrapper: Wrapper) -> None:
        """Set ``owner.name`` to a ``wrapt.FunctionWrapper(original, wrapper)``, on ``owner`` itself."""
        raw = self._original(owner, name)
        self._install(owner, name, wrapt.FunctionWrapper(raw, wrapper))

    @property
    def patched(self) -> list[tuple[type, str]]:
        return [(p.owner, p.name) for p in self._applied]

    def restore(self) -> None:
        while self._applied:
            patch = self._applied.pop()
            current = vars(patch.owner).get(patch.name)
            if current is not patch.proxy:
                # Someone patched on top of us: leave their patch; ours is inert once stopped.
                _logger.warning(
                    "otel-trading instrumentation: %s.%s was re-wrapped by other code; leaving it in place",
                    patch.owner.__qualname__,
                    patch.name,
                )
                continue
            if patch.had_own:
                setattr(patch.owner, patch.name, patch.previous)
            else:
                delattr(patch.owner, patch.name)


def keep_by_id(table: dict[int, Any], obj: Any, value: Any) -> bool:
    """``table[id(obj)] = value`` until ``obj`` is collected (hot paths look instances up by ``id``
    without holding them); True when ``obj`` was not in ``table`` yet."""
    key = id(obj)
    new = key not in table
    if new:
        weakref.finalize(obj, table.pop, key, None)
    table[key] = value
    return new


# -- import watching --------------------------------------------------------------------------------


class _NotifyingLoader(importlib.abc.Loader):
    """Delegates to the real loader; after the module has run, hands it back its loader and notifies."""

    def __init__(self, loader: Any, watcher: ImportWatcher) -> None:
        self._loader = loader
        self._watcher = watcher

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._watcher._loaded(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class ImportWatcher:
    """A ``sys.meta_path`` finder that only reacts to the module names it was asked to watch."""

    def __init__(self) -> None:
        self._pending: dict[str, list[Callable[[types.ModuleType], None]]] = {}
        self._lock = threading.RLock()
        self._busy = threading.local()

    def when_imported(self, name: str, callback: Callable[[types.ModuleType], None]) -> None:
        """Call ``callback(module)`` now if ``name`` is imported, else right after its first import."""
        with self._lock:
            module = sys.modules.get(name)
            if module is None:
                self._pending.setdefault(name, []).append(callback)
                if not any(finder is self for finder in sys.meta_path):
                    sys.meta_path.insert(0, self)
                return
        callback(module)

    def close(self) -> None:
        with self._lock:
            self._pending.clear()
            self._uninstall()

    def _uninstall(self) -> None:
        for i, finder in enumerate(sys.meta_path):
            if finder is self:
                del sys.meta_path[i]
                break

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if fullname not in self._pending:
            return None
        busy: set[str] = self._busy.__dict__.setdefault("names", set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except Exception:
            return None  # the regular finders will raise the same error for the bot
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, self)
        return spec

    def _loaded(self, module: types.ModuleType) -> None:
        with self._lock:
            callbacks = self._pending.pop(module.__name__, [])
            if not self._pending:
                self._uninstall()
        for callback in callbacks:
            try:
                callback(module)
            except Exception as exc:
                report(f"instrumenting module {module.__name__!r} on import", exc)


# -- per-instance state ------------------------------------------------------------------------------


class WeakIdentityMap(Generic[V]):
    """``{object: value}`` by identity, entries dropped when the object is collected.

    A value is never released inside the garbage collector: objects in reference cycles (a
    pybreaker breaker and its state objects) die during a GC pass, which can run while the same
    thread holds a recording-layer lock, and releasing a binding runs the recording layer's
    finalizer (which takes those locks). Values of collected objects wait in ``_dead`` and are
    released by ``flush()``, which runs at the next lookup, i.e. from instrumentation code.
    """

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref[Any], V]] = {}
        self._dead: list[V] = []
        self._lock = threading.Lock()

    def get(self, obj: Any) -> V | None:
        if self._dead:
            self.flush()
        entry = self._data.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        return None

    def set(self, obj: Any, value: V) -> None:
        if self._dead:
            self.flush()
        key = id(obj)
        data = self._data
        dead = self._dead

        def gone(ref: weakref.ref[Any], key: int = key) -> None:
            # Runs inside GC: no lock, no release (see the class docstring).
            entry = data.get(key)
            if entry is not None and entry[0] is ref:
                dead.append(entry[1])
                data.pop(key, None)

        ref = weakref.ref(obj, gone)  # TypeError for objects that cannot be weakly referenced
        with self._lock:
            data[key] = (ref, value)

    def flush(self) -> None:
        """Release the values of collected objects (call only where no recording lock is held)."""
        dead = self._dead
        while dead:
            try:
                dead.pop()
            except IndexError:
                break

    def values(self) -> list[V]:
        return [value for ref, value in list(self._data.values()) if ref() is not None]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
        self.flush()

    def __len__(self) -> int:
        return len(self.values())


# -- reading the instrumented objects ---------------------------------------------------------------


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
