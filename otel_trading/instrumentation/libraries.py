"""The one list of instrumented libraries; each is a home package ``otel_trading.instrumentation.<name>``.

Adding a library is its folder plus its line here (``tests/unit/test_library_homes.py`` then says
what else must name it: the entry point and extras in ``pyproject.toml``, the README table). It
imports only the standard library, so ``noxfile.py`` reads it without installing the package.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["COMPILED", "LIBRARIES"]

#: In the order the umbrella instruments them.
LIBRARIES: tuple[str, ...] = ("pybreaker", "aiobreaker", "circuitbreaker", "purgatory", "pyee")

#: The homes with compiled hot paths: an ``_hooks.c`` (and its stubs, ``_hooks.pyi``, which wheels
#: ship too) beside their ``hooks.py``, built by setup.py into the module
#: ``otel_trading.instrumentation.<name>._hooks`` (``_core/hot_path.py`` loads it).
COMPILED: tuple[str, ...] = tuple(name for name in LIBRARIES if (Path(__file__).parent / name / "_hooks.pyi").is_file())
