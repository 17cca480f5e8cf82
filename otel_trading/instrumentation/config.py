"""Configuration naming the bot's own breaker and event-bus classes, and its validation.

Where it is read from, first match wins:

1. ``instrument(config=...)`` / ``instrument_bot(config=...)``: a mapping, or a TOML/JSON file path;
2. ``OTEL_TRADING_INSTRUMENT``: inline JSON (starts with ``{``), or the path of a ``.toml`` /
   ``.json`` file (a TOML file may be a ``pyproject.toml``: its ``[tool.otel-trading.instrument]``
   section is used);
3. the ``[tool.otel-trading.instrument]`` section of ``pyproject.toml`` in the working directory.

TOML is read with ``tomllib`` (Python 3.11+) or the ``tomli`` package on 3.10 (installed by the
``instrumentation`` extra); JSON needs nothing. The format (TOML shown; JSON has the same keys)::

    [[tool.otel-trading.instrument.breakers]]
    class = "venues.guard:VenueGuard"         # module:QualifiedName
    call = ["call", "call_async"]             # method(s) that run the guarded function
    name = "name"                             # attribute with the breaker's name (default "name")
    state = "state"                           # attribute (or method) giving its state
    states = { closed = "CLOSED", open = "OPEN", half_open = "HALF_OPEN" }
    rejected_exceptions = ["venues.guard:GuardOpen"]   # raised instead of calling: rejected
    excluded_exceptions = []                  # business errors: counted as successes
    # A guarded block spanning two methods (a context manager), instead of or beside ``call``:
    # enter = ["__enter__", "__aenter__"]     # the block starts (a rejection raised here is counted)
    # exit = ["__exit__", "__aexit__"]        # it ends: the exception passed in is its outcome
    # per_call_objects = true                 # instances are made per call (wrappers around shared
                                              # state): one series per name, state read through the newest

    [[tool.otel-trading.instrument.event_buses]]
    class = "tinybus:TinyBus"
    publish = "publish"                       # counts events published
    subscribe = "subscribe"                   # counts subscribers (unsubscribe = "..." to un-count)
    dispatch = "_deliver"                     # runs the handlers of one event: processed, duration, errors
    event_arg = 0                             # the argument naming the event: index after self, or name
    subscribers = "_handlers"                 # optional: mapping {event type: handlers}, read at scrape
    queue_size = "_queue.qsize"               # optional: attribute or method giving the queue length
    name = "name"                             # optional: attribute with the bus name (label ``bus``)
    exclude_events = ["new_listener", "error"]  # optional: the library's own events, never counted

Every problem names its entry. ``strict=True`` (the default of ``load_config``/``parse_config``,
and what ``instrument(config=...)`` uses) raises one ``ConfigurationError`` listing them all;
``strict=False`` (what a configuration from the environment or ``pyproject.toml`` gets) keeps
every valid entry and lists the problems in ``InstrumentConfig.problems``: one bad entry leaves
only that entry uninstrumented.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_trading.errors import ConfigurationError, InstrumentConfigurationError
from otel_trading.settings import OTEL_TRADING_INSTRUMENT

__all__ = [
    "BreakerClassSpec",
    "ClassRef",
    "ClassSpec",
    "ConfigurationError",
    "EventBusClassSpec",
    "InstrumentConfig",
    "InstrumentConfigurationError",
    "load_config",
    "parse_config",
]

PYPROJECT_SECTION = "[tool.otel-trading.instrument]"

Scalar = str | int | bool
STATE_KEYS = {"closed": 0, "open": 1, "half_open": 2}

_BREAKER_KEYS = {
    "class",
    "call",
    "enter",
    "exit",
    "per_call_objects",
    "name",
    "state",
    "states",
    "rejected_exceptions",
    "excluded_exceptions",
}
_BUS_KEYS = {
    "class",
    "publish",
    "dispatch",
    "subscribe",
    "unsubscribe",
    "event_arg",
    "name",
    "queue_size",
    "subscribers",
    "exclude_events",
}
_TOP_KEYS = {"breakers", "event_buses"}


_Invalid = InstrumentConfigurationError


@dataclass(frozen=True)
class ClassRef:
    """``module:Qualified.Name``."""

    module: str
    qualname: str

    def __str__(self) -> str:
        return f"{self.module}:{self.qualname}"


@dataclass(frozen=True)
class ClassSpec:
    """One configured class: where it was configured (for messages) and which class it is."""

    where: str
    cls: ClassRef


@dataclass(frozen=True)
class BreakerClassSpec(ClassSpec):
    """A breaker class: its call methods (or block ends), name, state and exceptions."""

    calls: tuple[str, ...]
    name: tuple[str, ...]
    state: tuple[str, ...]
    #: (configured state value, 0/1/2)
    states: tuple[tuple[Scalar, int], ...]
    rejected: tuple[ClassRef, ...]
    excluded: tuple[ClassRef, ...]
    #: methods that start a guarded block (``__enter__``), and those that end it (``__exit__``)
    enters: tuple[str, ...] = ()
    exits: tuple[str, ...] = ()
    #: instances are short-lived wrappers made per call: bind by name, not by instance
    per_call_objects: bool = False


@dataclass(frozen=True)
class EventBusClassSpec(ClassSpec):
    """An event-bus class: its publish, dispatch and subscription methods and what it reads."""

    publish: tuple[str, ...]
    dispatch: tuple[str, ...]
    subscribe: tuple[str, ...]
    unsubscribe: tuple[str, ...]
    event_arg: int | str
    name: tuple[str, ...]
    queue_size: tuple[str, ...] | None
    subscribers: tuple[str, ...] | None
    #: event labels that are the library's own (pyee's ``new_listener``, ``error``): never counted
    exclude_events: frozenset[str] = frozenset()


@dataclass(frozen=True)
class InstrumentConfig:
    source: str
    breakers: tuple[BreakerClassSpec, ...] = ()
    event_buses: tuple[EventBusClassSpec, ...] = ()
    #: What was wrong (lenient loading only): each problem names the entry left out because of it.
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.breakers and not self.event_buses


# -- loading ------------------------------------------------------------------------------------------


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    strict: bool = True,
) -> InstrumentConfig:
    """Find, read and validate the configuration (see the module docstring for the order).

    ``strict``: raise ``ConfigurationError`` on any problem; else keep the valid entries and list
    the problems in ``.problems`` (an unreadable file or invalid JSON/TOML leaves no entry).
    """
    try:
        loaded = _load(config, environ, cwd)
    except InstrumentConfigurationError as exc:
        if strict:
            raise
        return InstrumentConfig(source="invalid configuration", problems=tuple(exc.problems))
    if strict and loaded.problems:
        raise _Invalid(loaded.problems)
    return loaded


def _load(
    config: Mapping[str, Any] | str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
) -> InstrumentConfig:
    if config is not None:
        if isinstance(config, Mapping):
            return _parse(config, "instrument(config=...)")
        return _from_file(Path(config), str(config))
    env = os.environ if environ is None else environ
    raw = env.get(OTEL_TRADING_INSTRUMENT, "").strip()
    if raw:
        if raw.startswith("{"):
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _Invalid([f"{OTEL_TRADING_INSTRUMENT}: invalid JSON: {exc}"]) from None
            return _parse(data, OTEL_TRADING_INSTRUMENT)
        return _from_file(Path(raw), f"{OTEL_TRADING_INSTRUMENT}={raw}")
    pyproject = Path(cwd if cwd is not None else os.getcwd()) / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        if "otel-trading" in text:
            doc = _toml_loads(text, str(pyproject))
            section = doc.get("tool", {}).get("otel-trading", {}).get("instrument")
            if section is not None:
                return _parse(section, f"{pyproject} {PYPROJECT_SECTION}")
    return InstrumentConfig(source="none")


def _from_file(path: Path, source: str) -> InstrumentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Invalid([f"{source}: cannot read the configuration file: {exc}"]) from None
    if path.suffix.lower() == ".json":
        try:
            return _parse(json.loads(text), source)
        except json.JSONDecodeError as exc:
            raise _Invalid([f"{source}: invalid JSON: {exc}"]) from None
    doc = _toml_loads(text, source)
    if "tool" in doc:
        section = doc["tool"].get("otel-trading", {}).get("instrument") if isinstance(doc["tool"], dict) else None
        if section is None:
            raise _Invalid([f"{source}: has a [tool] table but no {PYPROJECT_SECTION} section"])
        return _parse(section, f"{source} {PYPROJECT_SECTION}")
    return _parse(doc, source)


def _toml_loads(text: str, source: str) -> dict[str, Any]:
    try:
        import tomllib as toml  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ModuleNotFoundError:
            raise _Invalid(
                [
                    f"{source}: reading TOML on Python < 3.11 needs the 'tomli' package "
                    "(pip install 'otel-trading[instrumentation]'), or give the configuration as JSON"
                ]
            ) from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise _Invalid([f"{source}: invalid TOML: {exc}"]) from None


# -- validation ---------------------------------------------------------------------------------------


def parse_config(data: Any, source: str, *, strict: bool = True) -> InstrumentConfig:
    """Validate a decoded configuration; raises ``ConfigurationError`` listing every problem,
    or with ``strict=False`` keeps the valid entries and lists the problems in ``.problems``."""
    config = _parse(data, source)
    if strict and config.problems:
        raise _Invalid(config.problems)
    return config


def _parse(data: Any, source: str) -> InstrumentConfig:
    """Every valid entry of a decoded configuration, and the problems of the others."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        return InstrumentConfig(
            source=source, problems=(f"{source}: must be a table/object with 'breakers' and/or 'event_buses'",)
        )
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(f"{source}: unknown key {key!r} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    breakers = [
        _breaker(e, f"{source} breakers[{i}]", problems)
        for i, e in enumerate(_entries(data, "breakers", source, problems))
    ]
    buses = [
        _bus(e, f"{source} event_buses[{i}]", problems)
        for i, e in enumerate(_entries(data, "event_buses", source, problems))
    ]
    seen: dict[ClassRef, str] = {}
    kept: list[BreakerClassSpec | EventBusClassSpec] = []
    for spec in [*breakers, *buses]:
        if spec is None:
            continue
        if spec.cls in seen:
            problems.append(f"{spec.where}: class {spec.cls} is already configured by {seen[spec.cls]}")
        else:
            seen[spec.cls] = spec.where
            kept.append(spec)
    return InstrumentConfig(
        source=source,
        breakers=tuple(b for b in kept if isinstance(b, BreakerClassSpec)),
        event_buses=tuple(b for b in kept if isinstance(b, EventBusClassSpec)),
        problems=tuple(problems),
    )


def _entries(data: Mapping[str, Any], key: str, source: str, problems: list[str]) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        problems.append(
            f"{source}: {key!r} must be a list of tables ([[...{key}]] in TOML), got {type(value).__name__}"
        )
        return []
    return value


def _where(where: str, entry: Mapping[str, Any]) -> str:
    cls = entry.get("class")
    return f"{where} ({cls})" if isinstance(cls, str) else where


def _class_ref(value: Any, what: str, where: str, problems: list[str]) -> ClassRef | None:
    if not isinstance(value, str) or value.count(":") != 1:
        problems.append(f"{where}: {what} must be a string 'module:ClassName', got {value!r}")
        return None
    module, qualname = value.split(":")
    if not _dotted(module) or not _dotted(qualname):
        problems.append(f"{where}: {what} {value!r} is not 'module.path:ClassName' made of Python identifiers")
        return None
    return ClassRef(module, qualname)


def _dotted(value: str) -> bool:
    return bool(value) and all(part.isidentifier() for part in value.split("."))


def _methods(entry: Mapping[str, Any], key: str, where: str, problems: list[str], required: bool) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        if required:
            problems.append(f"{where}: {key!r} is required (a method name or a list of method names)")
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        problems.append(f"{where}: {key!r} must be a method name or a non-empty list of method names, got {value!r}")
        return ()
    if len(set(names)) != len(names):
        problems.append(f"{where}: {key!r} lists a method twice: {value!r}")
    return tuple(dict.fromkeys(names))


def _path(
    entry: Mapping[str, Any], key: str, where: str, problems: list[str], default: str | None = None
) -> tuple[str, ...] | None:
    value = entry.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not _dotted(value):
        problems.append(f"{where}: {key!r} must be an attribute name or dotted path like 'queue.qsize', got {value!r}")
        return None
    return tuple(value.split("."))


def _exception_refs(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> tuple[ClassRef, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        problems.append(f"{where}: {key!r} must be a list of 'module:ExceptionName' strings, got {value!r}")
        return ()
    refs = [_class_ref(v, f"{key} entry", where, problems) for v in value]
    return tuple(r for r in refs if r is not None)


def _unknown_keys(entry: Mapping[str, Any], allowed: set[str], where: str, problems: list[str]) -> None:
    for key in sorted(set(entry) - allowed):
        problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _same(a: Scalar, b: Scalar) -> bool:
    return type(a) is type(b) and a == b


def _states(entry: Mapping[str, Any], where: str, problems: list[str]) -> tuple[tuple[Scalar, int], ...]:
    value = entry.get("states")
    if not isinstance(value, Mapping):
        problems.append(
            f"{where}: 'states' must map closed/open (and optionally half_open) to the values of the state "
            f'attribute, e.g. {{closed = "CLOSED", open = "OPEN", half_open = "HALF_OPEN"}}; got {value!r}'
        )
        return ()
    out: list[tuple[Scalar, int]] = []
    for key in sorted(set(value) - set(STATE_KEYS)):
        problems.append(f"{where}: 'states' has unknown state {key!r} (allowed: closed, open, half_open)")
    for key in ("closed", "open"):
        if key not in value:
            problems.append(f"{where}: 'states' must give the value(s) of the {key!r} state")
    for key, code in STATE_KEYS.items():
        if key not in value:
            continue
        raw = value[key]
        items = raw if isinstance(raw, list) else [raw]
        if not items or not all(isinstance(v, (str, int, bool)) for v in items):
            problems.append(
                f"{where}: states.{key} must be a string, integer or boolean (or a list of them), got {raw!r}"
            )
            continue
        for item in items:
            clash = next((c for v, c in out if _same(v, item)), None)
            if clash is not None:
                problems.append(f"{where}: state value {item!r} is given for more than one state")
            else:
                out.append((item, code))
    return tuple(out)


def _entry_start(
    entry: Any, where: str, problems: list[str], keys: set[str]
) -> tuple[str, int, ClassRef | None] | None:
    """What every class entry starts with: a table, of known keys, naming a class. Returns where
    it is, how many problems there were before it, and its class; None when it is not a table."""
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: must be a table/object, got {type(entry).__name__}")
        return None
    where = _where(where, entry)
    before = len(problems)
    _unknown_keys(entry, keys, where, problems)
    return where, before, _class_ref(entry.get("class"), "'class'", where, problems)


def _breaker(entry: Any, where: str, problems: list[str]) -> BreakerClassSpec | None:
    start = _entry_start(entry, where, problems, _BREAKER_KEYS)
    if start is None:
        return None
    where, before, cls = start
    blocks = "enter" in entry or "exit" in entry
    calls = _methods(entry, "call", where, problems, required=not blocks)
    enters = _methods(entry, "enter", where, problems, required=blocks)
    exits = _methods(entry, "exit", where, problems, required=blocks)
    for method in sorted({*calls, *enters, *exits}):
        roles = [key for key, names in (("call", calls), ("enter", enters), ("exit", exits)) if method in names]
        if len(roles) > 1:
            problems.append(f"{where}: method {method!r} cannot be both {roles[0]!r} and {roles[1]!r}")
    per_call = entry.get("per_call_objects", False)
    if not isinstance(per_call, bool):
        problems.append(f"{where}: 'per_call_objects' must be true or false, got {per_call!r}")
    name = _path(entry, "name", where, problems, default="name")
    state = _path(entry, "state", where, problems)
    if "state" not in entry:
        problems.append(f"{where}: 'state' (the attribute holding the breaker's state) is required")
    states = _states(entry, where, problems)
    rejected = _exception_refs(entry, "rejected_exceptions", where, problems)
    excluded = _exception_refs(entry, "excluded_exceptions", where, problems)
    if len(problems) > before or cls is None or name is None or state is None:
        return None
    return BreakerClassSpec(where, cls, calls, name, state, states, rejected, excluded, enters, exits, per_call is True)


def _bus(entry: Any, where: str, problems: list[str]) -> EventBusClassSpec | None:
    start = _entry_start(entry, where, problems, _BUS_KEYS)
    if start is None:
        return None
    where, before, cls = start
    roles = {
        "publish": _methods(entry, "publish", where, problems, required=True),
        "dispatch": _methods(entry, "dispatch", where, problems, required=False),
        "subscribe": _methods(entry, "subscribe", where, problems, required=False),
        "unsubscribe": _methods(entry, "unsubscribe", where, problems, required=False),
    }
    _check_roles(roles, where, problems)
    event_arg = entry.get("event_arg", 0)
    if isinstance(event_arg, bool) or not (
        (isinstance(event_arg, int) and event_arg >= 0) or (isinstance(event_arg, str) and event_arg.isidentifier())
    ):
        problems.append(
            f"{where}: 'event_arg' must be an argument index (0 = first after self) or name, got {event_arg!r}"
        )
    name = _path(entry, "name", where, problems, default="name")
    queue_size = _path(entry, "queue_size", where, problems)
    subscribers = _path(entry, "subscribers", where, problems)
    excluded_events = entry.get("exclude_events", [])
    if isinstance(excluded_events, str):
        excluded_events = [excluded_events]
    if not isinstance(excluded_events, list) or not all(isinstance(e, str) and e for e in excluded_events):
        problems.append(f"{where}: 'exclude_events' must be a list of event names, got {excluded_events!r}")
        excluded_events = []
    if len(problems) > before or cls is None or name is None:
        return None
    return EventBusClassSpec(
        where,
        cls,
        roles["publish"],
        roles["dispatch"],
        roles["subscribe"],
        roles["unsubscribe"],
        event_arg,
        name,
        queue_size,
        subscribers,
        frozenset(excluded_events),
    )


def _check_roles(roles: Mapping[str, Sequence[str]], where: str, problems: list[str]) -> None:
    """A method has one role, except that a bus delivering inline may publish and dispatch at once."""
    owner: dict[str, str] = {}
    for role, names in roles.items():
        for name in names:
            other = owner.get(name)
            if other is None:
                owner[name] = role
            elif {other, role} != {"publish", "dispatch"}:
                problems.append(f"{where}: method {name!r} cannot be both {other!r} and {role!r}")
