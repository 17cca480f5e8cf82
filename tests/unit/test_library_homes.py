"""One home per library, one list of libraries, and a shared core that names none of them."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

from otel_trading.instrumentation import LIBRARY_TARGETS, LibraryInstrumentor
from otel_trading.instrumentation.libraries import LIBRARIES

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
