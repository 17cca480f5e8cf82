"""One home per library, one list of libraries, and a shared core that names none of them."""

from __future__ import annotations

import importlib
import os
import re
import runpy
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any

import pytest

from otel_trading.instrumentation import LIBRARY_TARGETS, LibraryInstrumentor
from otel_trading.instrumentation.libraries import COMPILED, LIBRARIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTATION = ROOT / "otel_trading" / "instrumentation"
HOME_FILES = ("__init__.py", "package.py", "reliance.py", "hooks.py")


def test_the_umbrella_instruments_exactly_the_listed_libraries_in_order() -> None:
    assert LIBRARY_TARGETS == LIBRARIES


CORE_SOURCES = sorted(p for p in (INSTRUMENTATION / "_core").iterdir() if p.suffix in (".py", ".c", ".h", ".pyi"))


@pytest.mark.parametrize("path", CORE_SOURCES, ids=lambda p: p.name)
def test_the_shared_core_names_no_library(path: Path) -> None:
    text = path.read_text()
    named = [lib for lib in LIBRARIES if re.search(rf"\b{lib}\b", text)]
    assert named == [], f"{path.name} names {named}: library knowledge belongs in the library's home"


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_home_holds_its_instrumentor_releases_reliance_and_hooks(library: str) -> None:
    home = INSTRUMENTATION / library
    assert sorted(p.name for p in home.glob("*.py")) == sorted(HOME_FILES)
    module = importlib.import_module(f"otel_trading.instrumentation.{library}")
    instrumentor = getattr(module, f"{library.capitalize()}Instrumentor")
    assert issubclass(instrumentor, LibraryInstrumentor) and instrumentor.target == library
    package = importlib.import_module(f"otel_trading.instrumentation.{library}.package")
    assert instrumentor._instruments == package._instruments
    assert instrumentor._instruments[0].split()[0] == library
    assert importlib.import_module(f"otel_trading.instrumentation.{library}.reliance").RELIANCE.library == library


def test_every_listed_library_has_its_entry_point_and_no_other_library_has_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["opentelemetry_instrumentor"]
    libraries = {name: target for name, target in entry_points.items() if name != "otel_trading"}
    assert libraries == {
        f"otel_trading_{lib}": f"otel_trading.instrumentation.{lib}:{lib.capitalize()}Instrumentor" for lib in LIBRARIES
    }
    assert entry_points["otel_trading"] == "otel_trading.instrumentation:TradingInstrumentor"


class _Extension:
    """What setup.py gives ``setuptools.Extension``, kept."""

    def __init__(self, name: str, sources: list[str], **kwargs: Any) -> None:
        self.name, self.sources = name, sources
        self.include_dirs: list[str] = kwargs.get("include_dirs", [])
        self.depends: list[str] = kwargs.get("depends", [])


def _setup_extensions(monkeypatch: pytest.MonkeyPatch) -> list[_Extension]:
    """The extensions ``setup.py`` declares here, run against a stand-in for setuptools (nothing is built,
    and the interpreter needs no setuptools: a venv of 3.12+ has none)."""
    if not (ROOT / "setup.py").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("setup.py is missing: CI runs the tests from a checkout, where it must be")
        pytest.skip("an installed package: setup.py is in the sdist only")
    if sysconfig.get_config_var("Py_GIL_DISABLED") or sys.implementation.name != "cpython":
        pytest.skip("setup.py builds no extension on this interpreter")
    declared: dict[str, Any] = {}
    setuptools = types.ModuleType("setuptools")
    setuptools.Extension = _Extension  # type: ignore[attr-defined]
    setuptools.setup = lambda **kwargs: declared.update(kwargs)  # type: ignore[attr-defined]
    command = types.ModuleType("setuptools.command.build_ext")
    command.build_ext = type("build_ext", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "setuptools", setuptools)
    monkeypatch.setitem(sys.modules, "setuptools.command", types.ModuleType("setuptools.command"))
    monkeypatch.setitem(sys.modules, "setuptools.command.build_ext", command)
    monkeypatch.delenv("OTEL_TRADING_BUILD_NATIVE", raising=False)
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="setup")
    return list(declared["ext_modules"])


def test_setup_builds_every_homes_hooks_and_the_components_update(monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(ext.name for ext in _setup_extensions(monkeypatch))
    assert names == sorted(
        [*(f"otel_trading.instrumentation.{lib}._hooks" for lib in COMPILED), "otel_trading.recording._fast_rows"]
    )


def test_every_extension_finds_and_depends_on_the_shared_headers_it_includes(monkeypatch: pytest.MonkeyPatch) -> None:
    for ext in _setup_extensions(monkeypatch):
        (source,) = ext.sources
        included = _headers_included(ROOT / source)
        assert sorted(str((ROOT / h).relative_to(ROOT)) for h in ext.depends) == sorted(
            str(h.relative_to(ROOT)) for h in included
        ), ext.name
        assert {str(h.parent.relative_to(ROOT)) for h in included} <= set(ext.include_dirs), ext.name


def _headers_included(source: Path) -> set[Path]:
    """The project headers ``source`` includes (``#include "<name>"``), directly or through one another."""
    folders = [ROOT / "otel_trading" / "instrumentation" / "_core", ROOT / "otel_trading" / "recording"]
    found: set[Path] = set()
    todo = [source]
    while todo:
        for name in re.findall(r'^#include "([^"]+)"', todo.pop().read_text(), re.MULTILINE):
            (header,) = [f / name for f in folders if (f / name).is_file()]
            if header not in found:
                found.add(header)
                todo.append(header)
    return found


def test_the_components_update_has_its_sources_and_its_stubs_in_the_wheels_package_data() -> None:
    recording = ROOT / "otel_trading" / "recording"
    for name in ("_fast_rows.c", "_fast_rows.pyi", "_rows.h"):
        assert (recording / name).is_file(), name
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["otel_trading.recording"] == ["_fast_rows.pyi"]
