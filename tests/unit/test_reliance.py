"""Declared reliance: shapes read from source, names checked, a library that differs left out loudly."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_trading.instrumentation._core import reliance as _code_shape
from otel_trading.instrumentation._core.reliance import (
    COROUTINE,
    FUNCTION,
    Attribute,
    Function,
    Reliance,
    Shape,
    shape_differences,
    shape_of,
)
from otel_trading.instrumentation._core.reporting import reset_reports
from otel_trading.instrumentation.libraries import LIBRARIES


def _run(self: Any, f: Any, args: Any, kwargs: Any) -> None:
    try:
        result = f(*args, **kwargs)
    except Exception as exc:
        self.emit("error", exc)
    else:

        def callback(done: Any) -> None:
            self._waiting.discard(done)

        result.add_done_callback(callback)


def _run_retyped(self, f, args, kwargs):  # the same code, no hints
    try:
        result = f(*args, **kwargs)
    except Exception as exc:
        self.emit("error", exc)
    else:

        def callback(done):
            self._waiting.discard(done)

        result.add_done_callback(callback)


RUN_SHAPE = Shape(
    4, ("self", "f", "args", "kwargs"), ("Exception", "_waiting", "add_done_callback", "discard", "emit"), FUNCTION
)


def test_names_are_attributes_and_unbound_names_of_the_body_and_its_nested_functions() -> None:
    assert shape_of(_run) == RUN_SHAPE


def test_type_hints_do_not_change_a_shape() -> None:
    assert shape_of(_run_retyped) == shape_of(_run)


def test_the_kind_of_function_is_part_of_the_shape() -> None:
    async def run(self: Any) -> None:
        await self.context.wait()

    assert shape_of(run) == Shape(1, ("self",), ("context", "wait"), COROUTINE)


def test_a_function_of_a_declared_shape_has_no_differences() -> None:
    other = RUN_SHAPE._replace(names=("unrelated",))
    assert shape_differences(_run, (other, RUN_SHAPE), "Emitter._emit_run") is None


def test_a_renamed_attribute_is_named_as_the_difference() -> None:
    def _run_renamed(self: Any, f: Any, args: Any, kwargs: Any) -> None:  # another body, one name changed
        def forget(done: Any) -> None:
            self._pending.discard(done)

        try:
            f(*args, **kwargs).add_done_callback(forget)
        except Exception as exc:
            self.emit("error", exc)

    found = shape_differences(_run_renamed, (RUN_SHAPE,), "Emitter._emit_run")
    assert found == "Emitter._emit_run: names +_pending, -_waiting"


def test_a_function_whose_source_cannot_be_read_cannot_be_decided() -> None:
    namespace: dict[str, Any] = {}
    exec("def _emit_run(self, f, args, kwargs):\n    self.emit('x')\n", namespace)  # no source file
    found = shape_differences(namespace["_emit_run"], (RUN_SHAPE,), "Emitter._emit_run")
    assert found is not None and "source cannot be read" in found


def test_a_missing_or_compiled_function_is_a_difference() -> None:
    assert shape_differences(None, (RUN_SHAPE,), "Emitter._emit_run") == "Emitter._emit_run is missing"
    found = shape_differences(len, (RUN_SHAPE,), "Emitter._emit_run")
    assert found == "Emitter._emit_run is not a Python function (builtin_function_or_method)"


def test_an_unknown_distribution_is_named_without_a_version() -> None:
    assert _code_shape.version_of("no-such-distribution-otel-trading") == "(version unknown)"


class _Breaker:
    def __exit__(self, *exc: Any) -> None:
        self.__call_failed()

    def __call_failed(self) -> None: ...


def test_private_names_are_mangled_as_the_compiler_mangles_them() -> None:
    shape = shape_of(_Breaker.__exit__)
    assert shape is not None and shape.names == ("_Breaker__call_failed",)
    assert set(shape.names) == set(_Breaker.__exit__.__code__.co_names)


# -- declared reliance, against a real module written for the test ----------------------------------

FAKE_LIBRARY = """
LIMIT = 3


class Breaker:
    def __init__(self, name):
        self._name = name
        self.__failures = 0

    def call(self, func, *args, **kwargs):
        return func(*args, **kwargs)

    def __fail(self):
        self._verdict = True

    @property
    def state(self):
        return "closed"
"""


@pytest.fixture
def fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``fake_lib_<n>`` on ``sys.path``, freshly imported by each test."""
    name = f"fake_lib_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FAKE_LIBRARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_everything_a_release_has_holds(fake_library: str) -> None:
    reliance = Reliance(
        "fake",
        functions=(
            Function(f"{fake_library}:Breaker.call", params=("self", "func")),
            Function(f"{fake_library}:Breaker.__fail"),
        ),
        attributes=(
            Attribute(f"{fake_library}:Breaker._name", set_by=("__init__",)),
            Attribute(f"{fake_library}:Breaker.__failures", set_by=("__init__",)),
            Attribute(f"{fake_library}:Breaker._verdict", set_by=("__init__", "__fail")),
            Attribute(f"{fake_library}:Breaker.state"),
            Attribute(f"{fake_library}:LIMIT"),
        ),
    )
    assert reliance.differences() == []


@pytest.mark.parametrize(
    ("declared", "difference"),
    [
        (Function("{m}:Breaker.calls"), "{m}:Breaker.calls is missing"),
        (
            Function("{m}:Breaker.call", params=("self", "fn")),
            "Breaker.call has parameters ('self', 'func'), not ('self', 'fn')",
        ),
        (Function("{m}:Breaker.state"), "Breaker.state is a property, not a function"),
        (Attribute("{m}:Breaker._label", set_by=("__init__",)), "Breaker._label is not set by __init__"),
        (Attribute("{m}:Breaker._verdict", set_by=("__init__",)), "Breaker._verdict is not set by __init__"),
        (Attribute("{m}:LIMITS"), "{m}:LIMITS is missing"),
        (Function("no_such_module_otel_trading:X.y"), "no_such_module_otel_trading cannot be imported"),
    ],
    ids=["method", "parameter", "not-a-function", "attribute", "set-elsewhere", "module-constant", "module"],
)
def test_a_declared_name_a_release_lacks_is_a_difference_naming_it(
    fake_library: str, declared: Function | Attribute, difference: str
) -> None:
    declared = dataclasses.replace(declared, where=declared.where.format(m=fake_library))
    (found,) = declared.differences()
    assert found.startswith(difference.format(m=fake_library)), found


def test_an_optional_function_of_a_missing_module_is_not_relied_on(fake_library: str) -> None:
    assert Function("no_such_module_otel_trading:Trio.run", optional=True).differences() == []


def test_an_optional_function_of_a_module_that_is_there_is_relied_on_whole(fake_library: str) -> None:
    assert Function(f"{fake_library}:Trio.run", optional=True).differences() == [f"{fake_library}:Trio.run is missing"]
    assert Function(f"{fake_library}:Breaker.run", optional=True).differences() == [
        f"{fake_library}:Breaker.run is missing"
    ]


def test_a_function_of_another_shape_is_a_difference(fake_library: str) -> None:
    declared = Function(
        f"{fake_library}:Breaker.call", shapes=(Shape(2, ("self", "func", "args", "kwargs"), ("get",), FUNCTION),)
    )
    (found,) = declared.differences()
    assert found == "Breaker.call: names -get"


def test_a_library_that_differs_is_left_out_with_one_warning_naming_release_interpreter_and_difference(
    fake_library: str, caplog: pytest.LogCaptureFixture
) -> None:
    reset_reports()
    reliance = Reliance(
        "pyee",
        functions=(Function(f"{fake_library}:Breaker.calls"),),
        attributes=(Attribute(f"{fake_library}:LIMITS"),),
    )
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        assert reliance.holds() is False
        assert reliance.holds() is False
    (record,) = caplog.records
    message = record.getMessage()
    version = importlib.metadata.version("pyee")
    assert f"pyee {version} on {platform.python_implementation()} {platform.python_version()} is left out" in message
    assert f"{fake_library}:Breaker.calls is missing | {fake_library}:LIMITS is missing" in message


def test_a_library_that_has_everything_is_instrumented_silently(
    fake_library: str, caplog: pytest.LogCaptureFixture
) -> None:
    reset_reports()
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        assert Reliance("fake", functions=(Function(f"{fake_library}:Breaker.call"),)).holds() is True
    assert caplog.records == []


def test_the_names_a_reliance_lists_are_the_library_chosen_ones(fake_library: str) -> None:
    reliance = Reliance(
        fake_library,
        functions=(
            Function(f"{fake_library}:Breaker.__init__"),
            Function(f"{fake_library}:Breaker.__fail", params=("self", "verdict", "args")),
            # "_verdict" and "LIMIT" are the library's own; "len" and "get" are not.
            Function(
                f"{fake_library}:Breaker.call",
                shapes=(Shape(1, ("self",), ("_verdict", "LIMIT", "len", "get"), FUNCTION),),
            ),
        ),
        attributes=(Attribute(f"{fake_library}:Breaker._name", set_by=("__init__",)),),
    )
    assert reliance.names() == ("Breaker", "LIMIT", "__fail", "_name", "_verdict", "call", "verdict")


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_library_home_declares_a_reliance_the_installed_release_has(library: str) -> None:
    reliance = importlib.import_module(f"otel_trading.instrumentation.{library}.reliance").RELIANCE
    assert reliance.library == library
    assert reliance.differences() == []
    assert reliance.names()
