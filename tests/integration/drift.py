"""Simulated releases renaming one name otel-trading relies on, the runner that measures them, and the judge."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tokenize
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "METRIC_PREFIXES",
    "RESULT_MARKER",
    "Point",
    "Release",
    "Run",
    "Verdict",
    "judge",
    "libraries",
    "reliance_names",
    "rename_in_source",
    "renamed",
    "run_release",
    "simulate_release",
]

#: The metrics that belong to a library target (``otel_trading.label_values.folded`` is otel-trading's own).
METRIC_PREFIXES = ("circuit_breaker.", "event_bus.")
#: The runner's result line starts with this, so that nothing the scenario prints is taken for it.
RESULT_MARKER = "DRIFT-RESULT "
SCENARIOS = Path(__file__).resolve().parent / "drift_scenarios"
REPO = Path(__file__).resolve().parents[2]
SUFFIX = "_renamed"

#: (metric name, sorted attributes): value, or the count of a histogram point.
Point = tuple[str, tuple[tuple[str, str], ...]]


# -- which names ---------------------------------------------------------------------------------------


def libraries() -> tuple[str, ...]:
    """The instrumented libraries: ``otel_trading.instrumentation.libraries.LIBRARIES``."""
    from otel_trading.instrumentation.libraries import LIBRARIES

    return LIBRARIES


def reliance_names(library: str) -> tuple[str, ...]:
    """Every name ``library``'s instrumentation relies on, as spelled in the library's source:
    ``otel_trading.instrumentation.<library>.reliance.RELIANCE.names()``."""
    reliance = importlib.import_module(f"otel_trading.instrumentation.{library}.reliance").RELIANCE
    names: tuple[str, ...] = reliance.names()
    return names


# -- renaming ------------------------------------------------------------------------------------------


def renamed(name: str) -> str:
    """What the simulated release calls ``name`` (``__call_failed`` -> ``__call_failed_renamed``)."""
    return name + SUFFIX


_STATEMENT_START = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}


def rename_in_source(source: str, name: str, modules: Iterable[str] = ()) -> tuple[str, int]:
    """``source`` with ``name`` renamed; and how many tokens were.

    Renamed: NAME tokens equal to ``name`` and string literals whose content is exactly ``name``
    (``getattr(x, "name")``, ``__slots__``, ``__all__``). Never renamed: module paths of import
    statements, nor a name imported by ``from ... import`` that is one of ``modules`` (the
    library's own module names).
    """
    new = renamed(name)
    module_set = frozenset(modules)
    edits: list[tuple[int, int, int, str]] = []  # (row, start col, end col, text)
    statement: str | None = None  # "import" or "from" while inside such a statement
    imported_names = False  # inside ``from ... import <here>``
    after_as = False
    previous: tokenize.TokenInfo | None = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, text = token.type, token.string
        if kind == tokenize.NEWLINE or (kind == tokenize.OP and text == ";"):
            statement, imported_names, after_as = None, False, False
        elif kind == tokenize.NAME:
            at_start = previous is None or previous.type in _STATEMENT_START or previous.string == ";"
            if at_start and text in ("import", "from"):
                statement, imported_names, after_as = text, False, False
            elif statement is not None and text == "import":
                imported_names = True
            elif statement is not None and text == "as":
                after_as = True
            elif text == name:
                if statement is None or after_as or (imported_names and text not in module_set):
                    edits.append((token.start[0], token.start[1], token.end[1], new))
                after_as = False
            else:
                after_as = False
        elif kind == tokenize.STRING and statement is None and name in text:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = None
            if value == name:
                start = text.index(name)  # after any prefix and the opening quote
                edits.append((token.start[0], token.start[1] + start, token.start[1] + start + len(name), new))
        if kind not in (tokenize.COMMENT, tokenize.NL):
            previous = token
    lines = source.splitlines(keepends=True)
    for row, start, end, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[end:]
    return "".join(lines), len(edits)


@dataclass(frozen=True)
class Release:
    """A simulated release: its site directory (first on ``sys.path``) and the bot's scenario beside it."""

    library: str
    name: str | None
    site: Path
    scenario: Path
    #: Tokens renamed in the library's copy, and in the scenario.
    in_library: int
    in_scenario: int


def _installed(library: str) -> tuple[Path, Path]:
    """The installed package directory (or single module file) and ``.dist-info`` directory of ``library``."""
    spec = importlib.util.find_spec(library)
    if spec is None or spec.origin is None:
        raise LookupError(f"{library} is not installed")
    locations = list(spec.submodule_search_locations or [])
    code = Path(locations[0]) if locations else Path(spec.origin)
    distribution = importlib.metadata.distribution(library)
    metadata_file = next(f for f in distribution.files or [] if f.name == "METADATA")
    dist_info = Path(str(distribution.locate_file(metadata_file))).parent
    return code, dist_info


def _module_names(code: Path) -> frozenset[str]:
    if code.is_file():
        return frozenset({code.stem})
    names = {code.name}
    for path in code.rglob("*.py"):
        names.update(part for part in path.relative_to(code).with_suffix("").parts if part != "__init__")
    return frozenset(names)


def simulate_release(library: str, name: str | None, destination: Path) -> Release:
    """Copy the installed ``library`` and its scenario under ``destination``, with ``name`` renamed
    throughout both (``None``: an unrenamed copy).

    The ``.dist-info`` is copied too, so that ``importlib.metadata.version()`` answers from the copy
    (with the installed release's version). The scenario (``drift_scenarios/<library>_bot.py``) is
    renamed the same way, so that the bot keeps using the renamed public API consistently.
    """
    code, dist_info = _installed(library)
    site = destination / "site"
    site.mkdir(parents=True)
    shutil.copytree(dist_info, site / dist_info.name)
    if code.is_file():
        shutil.copy2(code, site / code.name)
        sources = [site / code.name]
    else:
        shutil.copytree(code, site / code.name, ignore=shutil.ignore_patterns("__pycache__"))
        sources = sorted((site / code.name).rglob("*.py"))
    modules = _module_names(code)
    scenario = destination / f"{library}_scenario.py"
    shutil.copy2(SCENARIOS / f"{library}_bot.py", scenario)
    if name is None:
        return Release(library, name, site, scenario, 0, 0)
    in_library = sum(_rename_file(path, name, modules) for path in sources)
    return Release(library, name, site, scenario, in_library, _rename_file(scenario, name, modules))


def _rename_file(path: Path, name: str, modules: frozenset[str]) -> int:
    text, count = rename_in_source(path.read_text(encoding="utf-8"), name, modules)
    if count:
        path.write_text(text, encoding="utf-8")
    return count


# -- running -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one scenario run reported."""

    library: str
    version: str
    interpreter: str
    compiled: bool
    #: The file the library was imported from (must be inside the release's site).
    library_file: str
    #: The scenario's own observations (return values, exceptions, final state), as the bot sees them.
    bot: list[Any]
    points: dict[Point, float]
    #: (logger, level name, message, the last line of its exception or "") of every WARNING+ record
    #: of an ``otel_trading`` logger.
    logs: list[tuple[str, str, str, str]]
    #: A traceback when the scenario or the runner raised, else None.
    error: str | None
    stderr: str


def run_release(release: Release, hot_path: str, *, instrument: bool = True, timeout: float = 60) -> Run:
    """Run ``release``'s scenario in a fresh interpreter (``hot_path``: "compiled" or "python").

    The interpreter runs this module (``_main``) with the release's site first on ``sys.path``: it
    instruments with the library's own instrumentor (unless ``instrument`` is false) on a fresh
    ``MeterProvider`` with an in-memory reader, imports and runs the scenario, collects, and prints
    one JSON line: the library's otel-trading points and the WARNING+ records of ``otel_trading``
    loggers. Nothing here imports pytest.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(release.site), str(REPO)])
    env["OTEL_TRADING_PURE_PYTHON"] = "true" if hot_path == "python" else "false"
    argv = [sys.executable, "-m", "tests.integration.drift", release.library, str(release.scenario)]
    argv += [str(release.site), hot_path, "instrument" if instrument else "plain"]
    proc = subprocess.run(
        argv, cwd=release.scenario.parent, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if len(lines) != 1:
        raise AssertionError(
            f"the drift runner printed {len(lines)} result lines (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    data = json.loads(lines[0][len(RESULT_MARKER) :])
    points = {(metric, tuple(sorted(attrs.items()))): value for metric, attrs, value in data["points"]}
    return Run(
        library=data["library"],
        version=data["version"],
        interpreter=data["interpreter"],
        compiled=data["compiled"],
        library_file=data["library_file"],
        bot=data["bot"],
        points=points,
        logs=[tuple(record) for record in data["logs"]],
        error=data["error"],
        stderr=proc.stderr,
    )


# -- judging -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """``outcome``: "a" (exact metrics), "b" (left out with one warning) or "FAIL"; ``detail`` says why."""

    outcome: str
    detail: str


def _mentions(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` as a whole identifier (a private ``__x`` also mangled: ``_Cls__x``)."""
    mangled = r"(?:_[A-Za-z0-9]\w*?)?" if name.startswith("__") and not name.endswith("__") else ""
    return re.search(rf"(?<![\w]){mangled}{re.escape(name)}(?!\w)", message) is not None


def _diff(observed: Mapping[Point, float], expected: Mapping[Point, float]) -> str:
    lines = []
    for point in sorted(set(observed) | set(expected)):
        got, want = observed.get(point), expected.get(point)
        if got != want:
            metric, attrs = point
            lines.append(f"  {metric}{dict(attrs)}: observed {got}, expected {want}")
    return "\n".join(lines)


def judge(run: Run, expected: Mapping[Point, float], library: str, name: str | None) -> Verdict:
    """Which outcome ``run`` is, given the points the scenario implies (``name``: the renamed one).

    - "a": every ``circuit_breaker.*`` / ``event_bus.*`` point is exactly the expected one;
    - "b": the library is left out: no such point at all, and exactly one WARNING+ record of the
      ``otel_trading`` loggers, a WARNING of ``otel_trading.instrumentation`` (or a child) naming
      the library, its release, the interpreter and ``name``;
    - "FAIL": anything else (wrong values, silence, or the scenario raised).
    """
    if run.error is not None:
        return Verdict("FAIL", f"the scenario raised:\n{run.error}")
    if dict(run.points) == dict(expected):
        return Verdict("a", "every otel-trading metric of the library is exactly the expected one")
    records = "\n".join(
        f"  {level} {logger}: {message}" + (f" [{exc}]" if exc else "") for logger, level, message, exc in run.logs
    )
    records = records or "  (none)"
    if run.points:
        return Verdict(
            "FAIL", f"wrong values (observed vs expected):\n{_diff(run.points, expected)}\nrecords:\n{records}"
        )
    problems = []
    if len(run.logs) != 1:
        problems.append(f"{len(run.logs)} WARNING+ records of otel_trading loggers, not exactly one")
    for logger, level, message, _ in run.logs:
        if level != "WARNING":
            problems.append(f"a {level} record, not a WARNING")
        if logger != "otel_trading.instrumentation" and not logger.startswith("otel_trading.instrumentation."):
            problems.append(f"logged by {logger}, not otel_trading.instrumentation")
        wanted = [library, run.version, run.interpreter]
        problems += [f"the record does not name {what!r}" for what in wanted if what not in message]
        if name is not None and not _mentions(message, name):
            problems.append(f"the record does not mention {name!r}")
    if not problems:
        return Verdict("b", f"left out with one warning: {run.logs[0][2]}")
    why = "; ".join(dict.fromkeys(problems))
    return Verdict("FAIL", f"no metrics, but not left out as promised: {why}\nrecords:\n{records}")


# -- the runner (in the subprocess) ---------------------------------------------------------------------

_INSTRUMENTORS = {
    "pybreaker": "PybreakerInstrumentor",
    "aiobreaker": "AiobreakerInstrumentor",
    "circuitbreaker": "CircuitbreakerInstrumentor",
    "purgatory": "PurgatoryInstrumentor",
    "pyee": "PyeeInstrumentor",
}


def _collect(reader: Any) -> list[tuple[str, dict[str, Any], float]]:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    points: list[tuple[str, dict[str, Any], float]] = []
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if not metric.name.startswith(METRIC_PREFIXES):
                    continue
                for point in metric.data.data_points:
                    value = point.count if isinstance(point, HistogramDataPoint) else point.value
                    points.append((metric.name, dict(point.attributes or {}), value))
    return points


def _last_line(exc_info: Any) -> str:
    if not exc_info or exc_info[1] is None:
        return ""
    return traceback.format_exception_only(exc_info[0], exc_info[1])[-1].strip()


def _main(argv: list[str]) -> int:
    import logging

    library, scenario_path, site, hot_path, mode = argv
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("otel_trading").addHandler(Keep(logging.WARNING))
    result: dict[str, Any] = {
        "library": library,
        "version": importlib.metadata.version(library),
        "interpreter": f"{platform.python_implementation()} {platform.python_version()}",
        "compiled": False,
        "library_file": "",
        "bot": [],
        "points": [],
        "logs": [],
        "error": None,
    }
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import otel_trading.instrumentation as instrumentation

        result["compiled"] = instrumentation.compiled_hot_paths()
        if (hot_path == "compiled") != result["compiled"]:
            raise RuntimeError(f"asked for the {hot_path} hot paths: {instrumentation.pure_python_reason()}")
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        if mode == "instrument":
            getattr(instrumentation, _INSTRUMENTORS[library])().instrument(meter_provider=provider)
        spec = importlib.util.spec_from_file_location("drift_scenario", scenario_path)
        assert spec is not None and spec.loader is not None
        scenario = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scenario)
        result["library_file"] = str(getattr(sys.modules[library], "__file__", ""))
        if not result["library_file"].startswith(site):
            raise RuntimeError(f"{library} was imported from {result['library_file']}, not from {site}")
        bot, keep_alive = scenario.run()
        result["bot"] = bot
        result["points"] = _collect(reader)
        del keep_alive
    except BaseException:
        result["error"] = traceback.format_exc()
    result["logs"] = [(r.name, r.levelname, r.getMessage(), _last_line(r.exc_info)) for r in records]
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
