"""A released wheel installs compiled: no C compiler at install time, and the compiled hot paths run.

The wheel is the one ``tools/build_dists.sh`` makes (built from the sdist, repaired by auditwheel)
for the interpreter running the tests, or the one in ``OTEL_TRADING_WHEELHOUSE`` when the test
command has built them already. It goes into a fresh venv through ``pip install`` with a PATH that
holds no C compiler and ``CC`` pointing nowhere, so nothing can be compiled at install time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import parse_wheel_filename

from ..realprocs import REPO, missing, require_binary

# A cold run creates the tools venvs (about a minute); a warm one takes seconds.
pytestmark = [pytest.mark.timeout(1800)]

BUILD_TIMEOUT = 1200
INSTALL_TIMEOUT = 600
PROBE_TIMEOUT = 120
PY_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
NO_CC = "/nonexistent-cc"
# Every name a build could reach a C compiler by (this interpreter's own CC too); none may be on
# the install PATH.
COMPILER_NAMES = sorted(
    {"cc", "gcc", "clang", "c89", "c99", "tcc", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc"}
    | {Path(str(sysconfig.get_config_var("CC") or "cc").split()[0]).name}
)
# What pip needs from PATH to install wheels: nothing but the venv's own python, so the tools dir
# stays empty; a program added here is linked into it by name.
PIP_TOOLS: tuple[str, ...] = ()
# Compiler settings, and what would import another otel_trading or turn the compiled one off.
_DROPPED_ENV = frozenset(
    {
        *("CFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED", "CXX", "CPP"),
        *("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "OTEL_TRADING_PURE_PYTHON"),
    }
)
_PROBE = """
import json
import otel_trading
from otel_trading.instrumentation import compiled_hot_paths
from otel_trading.recording import fast_rows
print(json.dumps({"compiled": compiled_hot_paths(), "fast_rows": fast_rows.why_not or "compiled",
                  "package": otel_trading.__file__}))
"""


@dataclass
class Installed:
    venv: Path
    path: str  # the PATH pip ran with
    env: dict[str, str]
    probe: dict[str, Any]


def _run(
    argv: list[str], timeout: float, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd)


def _build_wheel(out: Path) -> Path:
    """The repaired wheel for this interpreter, from ``tools/build_dists.sh`` or ``OTEL_TRADING_WHEELHOUSE``."""
    wheelhouse = os.environ.get("OTEL_TRADING_WHEELHOUSE")
    if wheelhouse:
        found = sorted(Path(wheelhouse).resolve().glob(f"otel_trading-*-{PY_TAG}-{PY_TAG}-*.whl"))
        if len(found) != 1:
            pytest.fail(f"OTEL_TRADING_WHEELHOUSE={wheelhouse} holds {len(found)} {PY_TAG} wheels, not one: {found}")
        return found[0]
    bash = require_binary("bash")
    cc = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        missing(f"a C compiler ({cc}) to build the wheel")
    done = _run(
        [bash, str(REPO / "tools" / "build_dists.sh"), "--outdir", str(out), sys.executable], BUILD_TIMEOUT, REPO
    )
    assert done.returncode == 0, f"tools/build_dists.sh failed:\n{done.stderr[-6000:]}"
    wheels = [Path(line) for line in done.stdout.splitlines() if line.endswith(".whl")]
    assert len(wheels) == 1, done.stdout
    return wheels[0]


def _compiler_free_env(tmp: Path, venv: Path) -> dict[str, str]:
    tools = tmp / "path-tools"
    tools.mkdir()
    for name in PIP_TOOLS:
        (tools / name).symlink_to(require_binary(name))
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(tools)])
    env["CC"] = NO_CC
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("dists"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel-install")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=PROBE_TIMEOUT)
    env = _compiler_free_env(tmp, venv)
    # The instrumentation extra: compiled_hot_paths() lives in otel_trading.instrumentation.
    done = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", f"{wheel}[instrumentation]"], INSTALL_TIMEOUT, tmp, env
    )
    assert done.returncode == 0, f"pip install {wheel.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # Outside the checkout, so that `import otel_trading` cannot find the source tree.
    probe = _run([str(venv / "bin" / "python"), "-c", _PROBE], PROBE_TIMEOUT, tmp, env)
    assert probe.returncode == 0, probe.stderr
    return Installed(venv=venv, path=env["PATH"], env=env, probe=json.loads(probe.stdout.strip().splitlines()[-1]))


def test_the_wheel_carries_a_manylinux_tag(wheel: Path) -> None:
    _, _, _, tags = parse_wheel_filename(wheel.name)
    assert tags, wheel.name
    assert all(t.platform.startswith("manylinux") for t in tags), wheel.name
    assert {t.interpreter for t in tags} == {PY_TAG}, wheel.name


def test_the_install_environment_has_no_c_compiler(installed: Installed) -> None:
    found = {name: shutil.which(name, path=installed.path) for name in COMPILER_NAMES}
    assert not any(found.values()), found
    assert installed.env["CC"] == NO_CC and not Path(NO_CC).exists()


def test_the_imported_package_is_the_installed_wheel_not_the_checkout(installed: Installed) -> None:
    package = Path(installed.probe["package"]).resolve()
    assert package.is_relative_to(installed.venv.resolve()), package
    assert not package.is_relative_to(REPO), package


def test_the_wheel_installed_without_a_compiler_uses_the_compiled_hot_paths(installed: Installed) -> None:
    assert installed.probe["compiled"] is True


def test_the_wheel_installed_without_a_compiler_has_the_components_compiled_update(installed: Installed) -> None:
    assert installed.probe["fast_rows"] == "compiled"
