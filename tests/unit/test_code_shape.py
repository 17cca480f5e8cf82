"""Shape checks: read from source, the same on every interpreter, loud when a library is left out."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from typing import Any

import pytest

from otel_trading.instrumentation._core import reliance as _code_shape
from otel_trading.instrumentation._core.reliance import (
    COROUTINE,
    FUNCTION,
    Shape,
    library_matches,
    shape_differences,
    shape_of,
)
from otel_trading.instrumentation._core.reporting import reset_reports


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


def test_a_library_that_differs_is_left_out_with_one_warning_naming_release_interpreter_and_difference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reset_reports()
    checks = [("Emitter._emit_run", _run, (RUN_SHAPE._replace(names=("emit",)),))]
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        assert library_matches("pyee", "pyee", checks) is False
        assert library_matches("pyee", "pyee", checks) is False
    (record,) = caplog.records
    message = record.getMessage()
    version = importlib.metadata.version("pyee")
    assert f"pyee {version} on {platform.python_implementation()} {platform.python_version()} is left out" in message
    assert "Emitter._emit_run: names +Exception, +_waiting, +add_done_callback, +discard" in message


def test_a_library_of_a_known_shape_is_instrumented_silently(caplog: pytest.LogCaptureFixture) -> None:
    reset_reports()
    with caplog.at_level(logging.WARNING, logger="otel_trading.instrumentation"):
        assert library_matches("pyee", "pyee", [("Emitter._emit_run", _run, (RUN_SHAPE,))]) is True
    assert caplog.records == []


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
