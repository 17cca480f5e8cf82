"""Per-instance state kept beside instrumented objects, never on them: by identity, released with the object."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Generic, TypeVar

__all__ = ["V", "WeakIdentityMap", "keep_by_id"]

V = TypeVar("V")


def keep_by_id(table: dict[int, Any], obj: Any, value: Any) -> bool:
    """``table[id(obj)] = value`` until ``obj`` is collected (hot paths look instances up by ``id``
    without holding them); True when ``obj`` was not in ``table`` yet."""
    key = id(obj)
    new = key not in table
    if new:
        weakref.finalize(obj, table.pop, key, None)
    table[key] = value
    return new


class WeakIdentityMap(Generic[V]):
    """``{object: value}`` by identity, entries dropped when the object is collected.

    A value is never released inside the garbage collector: objects in reference cycles (a
    breaker and its state objects) die during a GC pass, which can run while the same
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
