"""Build hook: compiles the optional C hot paths (otel_trading/instrumentation/_native.c).

Without a C compiler (or on a platform this hook does not know how to link for) the build goes on
and the package uses its pure-Python hot paths; the build prints why. ``OTEL_TRADING_BUILD_NATIVE=false``
skips the compilation.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("otel_trading") / "instrumentation" / "_native.c"


def _compile(root: Path, out: Path) -> str | None:
    """Compile SOURCE into ``out``; None on success, else why not."""
    ldshared = sysconfig.get_config_var("LDSHARED")
    if not ldshared or os.name != "posix":
        return "no POSIX linker configuration for this Python"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python.h under {include} (install the Python headers, e.g. Debian's python3-dev)"
    cmd = [*shlex.split(ldshared), "-O2", "-fPIC", "-Wall", "-I", include, str(root / SOURCE), "-o", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]}: {exc}"
    if done.returncode != 0:
        return f"{' '.join(cmd)} failed:\n{done.stderr.strip()}"
    return None


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if os.environ.get("OTEL_TRADING_BUILD_NATIVE", "").strip().lower() in ("0", "false", "no"):
            print("otel-trading: OTEL_TRADING_BUILD_NATIVE=false; pure-Python hot paths", file=sys.stderr)
            return
        root = Path(self.root)
        name = "_native" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        target = root / SOURCE.parent / name
        # The editable wheel points at the source tree, so the module is built in place there.
        out = target if version == "editable" else Path(tempfile.mkdtemp(prefix="otel-trading-native-")) / name
        why = _compile(root, out)
        if why is not None:
            print(f"otel-trading: the C hot paths were not built ({why}); using pure Python", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(out)] = str(SOURCE.parent / name)
