"""The interpreter and library-release matrix (run by the test command, tests/run_all.sh).

- ``tests-3.10`` .. ``tests-3.13``: on each CPython, the unit tests (the data-path tests among
  them), the fork-safety test, each library's example bot under ``opentelemetry-instrument``, the
  installed-wheel test, the drift tests (a simulated release renaming each name an
  instrumentation relies on) and the quick benchmark, with the newest release of every library that
  interpreter can install. The package is installed editable with ``-Wall -Werror``, so each
  interpreter builds its own compiled hot paths in place, warning-free, and the session fails if
  they are not built.
- ``oldest``: the same library, example-bot and drift tests on the oldest interpreter with the oldest
  release of every library's range.
- ``bench-3.10`` .. ``bench-3.13`` (by hand, not in the test command): the full benchmark, written
  to ``bench/results/bench-<python>.json``.

The releases come from each library home's ``package.py`` (``otel_trading/instrumentation/<library>/``).
Interpreters are looked up on ``PATH`` and under ``pyenv root``; a missing one fails the run with
``CI=true`` (nox's default there) and is skipped otherwise. The whole suite (integration tests,
deploy, collector) runs once, on the test command's main interpreter.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
OLDEST_PYTHON = PYTHONS[0]

UNIT = ["tests/unit"]
LIBRARY_UNIT = [
    "tests/unit/test_reliance.py",
    "tests/unit/test_library_homes.py",
    "tests/unit/test_instrumentation_contract.py",
    "tests/unit/test_instrumentation_pybreaker.py",
    "tests/unit/test_instrumentation_aiobreaker.py",
    "tests/unit/test_instrumentation_circuitbreaker.py",
    "tests/unit/test_instrumentation_purgatory.py",
    "tests/unit/test_instrumentation_pyee.py",
    "tests/unit/test_instrumentation_hot_paths.py",
    "tests/unit/test_instrumentation_library_instrumentors.py",
]
BOTS = [
    "tests/integration/test_instrumentation_library_bots.py",
    "tests/integration/test_instrumentation_legacy_bot.py",
]
SUBPROCESS = ["tests/integration/test_fork_safety.py", "tests/integration/test_wheel_install.py"]
# Simulated releases renaming each name a library's instrumentation relies on (the installed release
# is the one renamed, so they run on each interpreter's newest and on the oldest releases).
DRIFT = ["tests/integration/test_reliance_drift.py"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "oldest"]


class Library(NamedTuple):
    distribution: str
    oldest: str
    newest: str
    newest_before: dict[str, str]

    def newest_for(self, python: str) -> str:
        return self.newest_before.get(python, self.newest)


def _libraries() -> dict[str, Library]:
    """The one list (``libraries.py``) and each home's ``package.py``, read by path: they import
    nothing, so the package need not be installed here."""
    home = ROOT / "otel_trading" / "instrumentation"
    found = {}
    for name in runpy.run_path(str(home / "libraries.py"))["LIBRARIES"]:
        package = runpy.run_path(str(home / name / "package.py"))
        distribution = package["_instruments"][0].split()[0]
        found[name] = Library(distribution, package["OLDEST"], package["NEWEST"], package["NEWEST_BEFORE"])
    return found


LIBRARIES = _libraries()


def _pyenv_paths() -> list[str]:
    """The bin folders of the pyenv interpreters of the matrix (the machine image keeps them there)."""
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        root = done.stdout.strip() if done.returncode == 0 else None
    found: list[str] = []
    for version in PYTHONS:
        for candidate in sorted(Path(root or "/nonexistent").glob(f"versions/{version}.*/bin"), reverse=True):
            if (candidate / f"python{version}").exists():
                found.append(str(candidate))
                break
    return found


os.environ["PATH"] = os.pathsep.join([*_pyenv_paths(), os.environ.get("PATH", "")])


def newest_releases(python: str) -> list[str]:
    """Every library at the newest release CPython ``python`` can install."""
    return [f"{lib.distribution}=={lib.newest_for(python)}" for lib in LIBRARIES.values()]


def oldest_releases() -> list[str]:
    return [f"{lib.distribution}=={lib.oldest}" for lib in LIBRARIES.values()]


def _install(session: nox.Session, releases: list[str]) -> None:
    # The compiled hot paths are built in place for this interpreter; -Werror keeps them warning-free.
    env = {"OTEL_TRADING_WERROR": "1", "OTEL_TRADING_BUILD_NATIVE": "true"}
    session.install("--upgrade", "pip")
    session.install("-e", ".[test]", *releases, env=env)
    session.run("python", "-m", "pip", "list", "--disable-pip-version-check", silent=False)


def _check_compiled(session: nox.Session) -> None:
    session.run(
        "python",
        "-c",
        "from otel_trading.instrumentation import compiled_hot_paths as c; "
        "from otel_trading.recording.fast_rows import record, why_not; "
        "assert c(), 'compiled hot paths not built'; assert record, why_not; print('compiled hot paths: built')",
    )


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths, *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit, data-path, example-bot and drift tests and the quick benchmark, newest library releases."""
    python = str(session.python)
    _install(session, newest_releases(python))
    _check_compiled(session)
    _pytest(session, *UNIT, *SUBPROCESS, *BOTS, *DRIFT)
    bench = Path(session.create_tmp()) / f"bench-quick-{python}.json"
    session.run("python", "bench/run.py", "--quick", "--json", str(bench))


@nox.session(python=OLDEST_PYTHON)
def oldest(session: nox.Session) -> None:
    """The library tests, example bots and drift tests on the oldest release of every library's range."""
    _install(session, oldest_releases())
    _check_compiled(session)
    _pytest(session, *LIBRARY_UNIT, *BOTS, *DRIFT)


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """The full benchmark on each interpreter (by hand: ``nox -s bench``; minutes each, on a quiet machine)."""
    python = str(session.python)
    _install(session, newest_releases(python))
    _check_compiled(session)
    out = ROOT / "bench" / "results" / f"bench-{python}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    session.run("python", "bench/run.py", "--json", str(out), *session.posargs)
