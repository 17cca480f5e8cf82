"""Build script: only the optional C hot paths, one extension module per library home that has them, and the
own components' compiled histogram update.

Each ``otel_trading/instrumentation/<library>/_hooks.c`` is the module
``otel_trading.instrumentation.<library>._hooks``; they share the header
``otel_trading/instrumentation/_core/hot_path.h``, which includes ``otel_trading/recording/_rows.h``
(the row layout, the histogram update, the context check). ``otel_trading/recording/_fast_rows.c``
(the components' update) includes ``_rows.h`` alone. All metadata is in pyproject.toml. The
extensions are ``optional=True``: without a C compiler or the Python headers the build goes on and
the package uses its pure-Python hot paths, and the build says why. ``OTEL_TRADING_BUILD_NATIVE=false``
skips them all, and so do other Python implementations and free-threaded CPython (the modules are
written for the GIL build).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: The shared headers' folders, and every compiled module (relative paths, as setuptools wants them):
#: module source -> (its include folders, the headers it depends on).
CORE = "otel_trading/instrumentation/_core"
RECORDING = "otel_trading/recording"
ROWS_H = f"{RECORDING}/_rows.h"
SOURCES: dict[Path, tuple[list[str], list[str]]] = {
    **{
        source: ([CORE, RECORDING], [f"{CORE}/hot_path.h", ROWS_H])
        for source in sorted(Path("otel_trading/instrumentation").glob("*/_hooks.c"))
    },
    Path(f"{RECORDING}/_fast_rows.c"): ([RECORDING], [ROWS_H]),
}
_PURE = "the package uses its pure-Python hot paths"
_WERROR = ["-Werror"] if os.environ.get("OTEL_TRADING_WERROR", "").strip() == "1" else []


def _skipped_because() -> str | None:
    """Why the extension is not even attempted, or None to build it."""
    if os.environ.get("OTEL_TRADING_BUILD_NATIVE", "").strip().lower() in ("0", "false", "no"):
        return "OTEL_TRADING_BUILD_NATIVE=false"
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "free-threaded CPython (the module is written for the GIL build)"
    return None


class OptionalBuildExt(build_ext):
    """Says in one line why the C hot paths were not built, then lets ``optional=True`` go on."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"otel-trading: the C hot paths were not built ({self._diagnose(exc)}); {_PURE}", file=sys.stderr)
            raise  # optional=True turns this into setuptools' own warning and goes on

    def _diagnose(self, exc: Exception) -> str:
        include = sysconfig.get_paths()["include"]
        if not (Path(include) / "Python.h").is_file():
            return f"no Python.h under {include}: install the Python headers, e.g. Debian's python3-dev"
        compiler = getattr(self.compiler, "compiler_so", None) or [os.environ.get("CC") or "cc"]
        if shutil.which(compiler[0]) is None:
            return f"no C compiler ({compiler[0]} not found): install one, e.g. Debian's gcc"
        return f"{type(exc).__name__}: {exc}"


why = _skipped_because()
if why is not None:
    print(f"otel-trading: not building the C hot paths ({why}); {_PURE}", file=sys.stderr)
ext_modules = (
    []
    if why is not None
    else [
        Extension(
            ".".join(source.with_suffix("").parts),  # e.g. otel_trading.instrumentation.<library>._hooks
            [source.as_posix()],
            include_dirs=include_dirs,
            depends=depends,
            optional=True,
            # After the interpreter's own CFLAGS, so these win. -Werror only when asked for
            # (OTEL_TRADING_WERROR=1: release builds and the test matrix): a newer compiler's new
            # warning must not turn a user's install into the pure-Python fallback. No fused
            # multiply-add: the exponential bucket index must round as Python's does.
            extra_compile_args=(["-O2", "-Wall", "-ffp-contract=off", *_WERROR] if os.name == "posix" else []),
        )
        for source, (include_dirs, depends) in SOURCES.items()
    ]
)

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
