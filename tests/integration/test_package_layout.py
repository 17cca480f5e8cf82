"""The package's shape: the runtime never loads operator tooling, and every module says its job in one line."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import otel_trading

PACKAGE = Path(otel_trading.__file__).resolve().parent
MODULE_FILES = sorted(PACKAGE.rglob("*.py"))
# A sentence ends at ., ! or ? followed by whitespace and a capital letter (``a .. b`` and ``x.py``
# inside a sentence do not end it).
_SENTENCE_BREAK = re.compile(r"(?<!\.)[.!?](?!\.)\s+[A-Z]")


def _tooling_modules_loaded_by(statement: str) -> list[str]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('otel_trading.tooling'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("statement", ["import otel_trading", "import otel_trading.instrumentation"])
def test_runtime_imports_load_no_tooling_module(statement: str) -> None:
    assert _tooling_modules_loaded_by(statement) == []


def test_the_cli_does_load_the_tooling() -> None:
    # The check above would pass vacuously if the name were wrong.
    assert "otel_trading.tooling.cli" in _tooling_modules_loaded_by("import otel_trading.tooling.cli")


def test_module_files_were_found() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULE_FILES}
    assert {"__init__.py", "tooling/__init__.py", "tooling/cli.py"} <= names


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_module_docstring_starts_with_one_sentence_on_one_line(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
    assert docstring, f"{path.name} has no module docstring"
    lines = docstring.splitlines()
    first = lines[0].strip()
    assert first, "the docstring's first line is empty"
    assert first.endswith((".", "!", "?")), f"first line is not a whole sentence: {first!r}"
    assert not _SENTENCE_BREAK.search(first), f"first line holds more than one sentence: {first!r}"
    assert len(lines) == 1 or not lines[1].strip(), "the one-line summary must be followed by a blank line"
