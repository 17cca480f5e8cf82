"""Every stated library range is the one the matrix tests, and claims no release beyond its two tested ends."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from otel_trading.instrumentation import LIBRARY_INSTRUMENTORS, LIBRARY_TARGETS, LibraryInstrumentor
from otel_trading.instrumentation._core.releases import LIBRARIES, SupportedLibrary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
EXTRAS_WITH_LIBRARIES = ("examples", "bench", "test")


@pytest.fixture
def nox_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The noxfile adds pyenv's interpreters to PATH on import: here an empty pyenv root, PATH restored."""
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))


@functools.cache
def _noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("otel_trading_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bound(specifiers: SpecifierSet, operator: str) -> Version:
    (found,) = [Version(s.version) for s in specifiers if s.operator == operator]
    return found


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_a_range_starts_at_its_oldest_tested_release_and_ends_before_the_next_major(name: str) -> None:
    lib = LIBRARIES[name]
    specifiers = SpecifierSet(lib.range)
    assert _bound(specifiers, ">=") == Version(lib.oldest)
    assert _bound(specifiers, "<") == Version(str(Version(lib.newest).major + 1))
    tested = [lib.oldest, lib.newest, *dict(lib.newest_before).values()]
    assert list(specifiers.filter(tested)) == tested


def test_every_library_target_has_a_supported_range() -> None:
    assert set(LIBRARY_TARGETS) == set(LIBRARIES)


@pytest.mark.parametrize("instrumentor", LIBRARY_INSTRUMENTORS, ids=lambda cls: cls.target)
def test_an_instrumentor_claims_exactly_its_supported_range(instrumentor: type[LibraryInstrumentor]) -> None:
    (requirement,) = (Requirement(r) for r in instrumentor().instrumentation_dependencies())
    lib = LIBRARIES[instrumentor.target]
    assert (requirement.name, requirement.specifier) == (lib.distribution, SpecifierSet(lib.range))


@pytest.mark.parametrize("extra", EXTRAS_WITH_LIBRARIES)
def test_an_extra_claims_exactly_the_supported_ranges(extra: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["optional-dependencies"][extra]]
    by_name = {r.name: r.specifier for r in requirements if r.name in {lib.distribution for lib in LIBRARIES.values()}}
    assert by_name, f"the {extra} extra names no instrumented library"
    for name, specifier in by_name.items():
        assert specifier == SpecifierSet(LIBRARIES[name].range), (extra, name)


def test_the_readme_table_states_each_range_and_its_tested_ends() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, lib in LIBRARIES.items():
        row = re.search(rf"^\| \*\*{name}\*\* \| `([^`]+)` \(tested ([^ ]+) and ([^ )]+)\) \|", readme, re.MULTILINE)
        assert row is not None, f"no README row for {name}"
        assert (SpecifierSet(row[1]), row[2], row[3]) == (SpecifierSet(lib.range), lib.oldest, lib.newest)


@pytest.mark.usefixtures("nox_env")
def test_the_matrix_installs_the_oldest_release_of_every_range() -> None:
    assert _noxfile().oldest_releases() == [f"{lib.distribution}=={lib.oldest}" for lib in LIBRARIES.values()]


@pytest.mark.usefixtures("nox_env")
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_the_matrix_installs_the_newest_release_each_interpreter_can(python: str) -> None:
    nox = _noxfile()
    assert python in nox.PYTHONS
    assert nox.newest_releases(python) == [
        f"{lib.distribution}=={lib.newest_for(python)}" for lib in LIBRARIES.values()
    ]


@pytest.mark.usefixtures("nox_env")
def test_the_newest_release_is_tested_on_some_interpreter() -> None:
    nox = _noxfile()
    tested = {release for python in nox.PYTHONS for release in nox.newest_releases(python)}
    assert {f"{lib.distribution}=={lib.newest}" for lib in LIBRARIES.values()} <= tested


def test_a_release_for_older_interpreters_is_in_the_range() -> None:
    lib = SupportedLibrary("x", ">= 1, < 3", oldest="1.0", newest="2.5", newest_before=(("3.10", "1.9"),))
    assert (lib.newest_for("3.10"), lib.newest_for("3.12")) == ("1.9", "2.5")


def test_the_classifiers_name_exactly_the_interpreters_the_matrix_runs(nox_env: None) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: 3."
    claimed = sorted(
        c.removeprefix("Programming Language :: Python :: ") for c in project["classifiers"] if c.startswith(prefix)
    )
    assert claimed == _noxfile().PYTHONS
