"""A release renaming a relied-on name gives exactly right metrics or leaves the library out with one warning."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import pytest

from otel_trading.instrumentation.libraries import COMPILED

from . import drift
from .drift import Point, Release, Run

#: The library instrumentations' hot paths: the compiled module and its pure-Python twins
#: (``OTEL_TRADING_PURE_PYTHON=true``).
HOT_PATHS = ("compiled", "python")
LIBRARIES = drift.libraries()
CASES = [
    pytest.param(library, name, id=f"{library}-{name}")
    for library in LIBRARIES
    for name in drift.reliance_names(library)
]

# -- what each scenario implies (drift_scenarios/<library>_bot.py) ---------------------------------------

#: Tripped by its second failure, rejecting while open, then a failed half-open trial and a good one.
RECOVERY = {("closed", "open"): 1, ("open", "half_open"): 2, ("half_open", "open"): 1, ("half_open", "closed"): 1}


def breaker(
    name: str,
    *,
    successes: int,
    failures: int,
    rejected: int,
    state: int = 0,
    transitions: Mapping[tuple[str, str], int] | None = None,
) -> dict[Point, float]:
    """The points of one breaker: every call that ran is timed, rejections are not."""
    label = (("name", name),)
    points: dict[Point, float] = {
        ("circuit_breaker.successes", label): successes,
        ("circuit_breaker.failures", label): failures,
        ("circuit_breaker.rejected", label): rejected,
        ("circuit_breaker.latency", label): successes + failures,
        ("circuit_breaker.state", label): state,
    }
    for (old, new), count in (transitions or {}).items():
        points["circuit_breaker.transitions", (("from_state", old), ("name", name), ("to_state", new))] = count
    return points


#: Opened by its one failure, then one call rejected: it ends open.
STUCK = breaker("bybit", successes=0, failures=1, rejected=1, state=1, transitions={("closed", "open"): 1})


def event(event_type: str, *, published: int, processed: int, errors: int, subscribers: int) -> dict[Point, float]:
    """The points of one event type: each processed event is timed; no handler, no subscriber point."""
    label = (("event_type", event_type),)
    points: dict[Point, float] = {
        ("event_bus.events.published", label): published,
        ("event_bus.events.processed", label): processed,
        ("event_bus.handler.errors", label): errors,
    }
    if processed:
        points["event_bus.processing.duration", label] = processed
    if subscribers:
        points["event_bus.subscribers_gauge", label] = subscribers
    return points


EXPECTED: dict[str, dict[Point, float]] = {
    # 3 plain successes, a generator call, an excluded error and the good trial's and last call's: 7.
    "pybreaker": {**breaker("binance", successes=7, failures=3, rejected=2, transitions=RECOVERY), **STUCK},
    # The same mix, with async calls among them.
    "aiobreaker": {**breaker("kraken", successes=7, failures=3, rejected=2, transitions=RECOVERY), **STUCK},
    "circuitbreaker": {
        # 3 successes and an error it does not expect (the library resets on it), then 2 after recovery.
        **breaker("kraken", successes=6, failures=3, rejected=2, transitions=RECOVERY),
        # A generator, an async call and an async generator; one async failure.
        **breaker("stream", successes=3, failures=1, rejected=0),
        **STUCK,
    },
    "purgatory": {
        **breaker("kraken", successes=6, failures=3, rejected=2, transitions=RECOVERY),
        **breaker("binance", successes=2, failures=0, rejected=0),
        **breaker("okx", successes=1, failures=1, rejected=0),
        **STUCK,
    },
    "pyee": {
        **event("tick", published=3, processed=3, errors=0, subscribers=2),
        **event("fill", published=1, processed=1, errors=1, subscribers=1),
        **event("quiet", published=1, processed=0, errors=0, subscribers=0),
        **event("quote", published=2, processed=2, errors=0, subscribers=2),
        **event("reject", published=1, processed=1, errors=1, subscribers=1),
        **event("bar", published=2, processed=2, errors=0, subscribers=1),
        **event("bad", published=1, processed=1, errors=1, subscribers=1),
        # Uplifted: emitted once on each side, published once each, processed on both sides each time.
        **event("sync", published=2, processed=4, errors=0, subscribers=2),
        ("event_bus.queue_size", (("bus", "AsyncIOEventEmitter"),)): 0,
    },
}

#: What the bot itself sees, instrumented or not, renamed or not: return values, exceptions, final state.
BOT: dict[str, list[object]] = {
    "pybreaker": [
        *(1, 1, 1, 3, "funds", "down", "refused", "refused", "refused", "refused", 1, 1, "refused", "refused"),
        *("closed", "open"),
    ],
    "aiobreaker": [
        *(1, 1, 3, "funds", 1, "down", "refused", "refused", "refused", "refused", 1, 1, "refused", "refused"),
        *(True, True),
    ],
    "circuitbreaker": [
        *(1, 1, 1, "funds", "down", "down", "refused", "refused", "down", 1, 1, 3, 1, "down", 3, "down", "refused"),
        *("closed", "closed", "open"),
    ],
    "purgatory": [
        *(1, 1, 1, "funds", "down", "down", "refused", "refused", "down", 1, 1, "down", "refused", 2, 2, 3, "down"),
        *("closed", "opened"),
    ],
    "pyee": [
        *("(0,)", "('also', 0)", True, "(1,)", "('also', 1)", True, "(2,)", "('also', 2)", True, "raised", False),
        *("(1,)", True, "(2,)", True, True, "('async', 1)", "('async', 2)", True, True, True),
        *("('u',)", "('u',)", "('n',)", "('n',)", True, True, ["bad (3,)", "rejected (3,)"]),
    ],
}


# -- fixtures -----------------------------------------------------------------------------------------------


class _Releases(dict[tuple[str, "str | None"], Release]):
    """(library, renamed name or None) -> its simulated release, made on first use, once per module."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self._factory = factory

    def __missing__(self, key: tuple[str, str | None]) -> Release:
        library, name = key
        release = drift.simulate_release(library, name, self._factory.mktemp(f"{library}-{name or 'unrenamed'}"))
        self[key] = release
        return release


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> _Releases:
    return _Releases(tmp_path_factory)


@pytest.fixture(params=HOT_PATHS)
def hot_path(request: pytest.FixtureRequest) -> str:
    missing = [lib for lib in COMPILED if not importlib.util.find_spec(f"otel_trading.instrumentation.{lib}._hooks")]
    if request.param == "compiled" and missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the compiled hot paths of {missing} are not built; CI installs them with `pip install -e .`")
        pytest.skip(f"the compiled hot paths of {missing} are not built here")
    return str(request.param)


def _bot_saw_the_same(run: Run, release: Release, hot_path: str) -> None:
    """The bot's own observations are the scenario's: the simulated release still works (checked
    uninstrumented when they differ) and the instrumentation changes nothing the bot sees."""
    expected = BOT[release.library]
    if run.bot == expected and run.error is None:
        return
    plain = drift.run_release(release, hot_path, instrument=False)
    assert plain.error is None and plain.bot == expected, (
        f"the simulated release breaks {release.library} itself (a harness problem, not otel-trading's): "
        f"uninstrumented the bot saw {plain.bot}\n{plain.error or ''}"
    )
    pytest.fail(f"instrumented, the bot saw {run.bot}, uninstrumented {plain.bot}\n{run.error or ''}")


# -- the scenarios themselves ------------------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_unrenamed_scenario_exports_exactly_the_metrics_it_implies(
    library: str, hot_path: str, releases: _Releases
) -> None:
    release = releases[library, None]
    run = drift.run_release(release, hot_path)
    assert run.library_file.startswith(str(release.site))
    assert run.compiled is (hot_path == "compiled")
    _bot_saw_the_same(run, release, hot_path)
    verdict = drift.judge(run, EXPECTED[library], library, None)
    assert verdict.outcome == "a", verdict.detail
    assert run.logs == []


# -- the drift --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("library", "name"), CASES)
def test_a_release_renaming_a_relied_on_name_gives_exact_metrics_or_leaves_the_library_out_with_one_warning(
    library: str, name: str, hot_path: str, releases: _Releases
) -> None:
    release = releases[library, name]
    assert release.in_library > 0, f"{name!r} is nowhere in {library}'s source: the reliance list is wrong"
    run = drift.run_release(release, hot_path)
    assert run.library_file.startswith(str(release.site))
    _bot_saw_the_same(run, release, hot_path)
    verdict = drift.judge(run, EXPECTED[library], library, name)
    assert verdict.outcome in ("a", "b"), f"{library} with {name!r} renamed ({hot_path}): {verdict.detail}"


# -- the harness ------------------------------------------------------------------------------------------

_SOURCE = """\
from .state import CircuitBreakerError, state
import pkg.state as state
from pkg import helper as state


class Breaker:
    __slots__ = ("state", "other")

    def __init__(self, state=None):
        self.state = getattr(self, "state", state)
        self.note = "the state", 'state'

    def __reset(self):
        return self.__reset
"""


def test_the_rename_rewrites_identifiers_and_exact_string_literals_but_not_module_paths() -> None:
    text, count = drift.rename_in_source(_SOURCE, "state", modules={"pkg", "state", "helper"})
    assert text.splitlines()[:3] == [
        "from .state import CircuitBreakerError, state",  # a module, imported from its package
        "import pkg.state as state_renamed",
        "from pkg import helper as state_renamed",
    ]
    assert '__slots__ = ("state_renamed", "other")' in text
    assert "def __init__(self, state_renamed=None):" in text
    assert 'self.state_renamed = getattr(self, "state_renamed", state_renamed)' in text
    assert "self.note = \"the state\", 'state_renamed'" in text
    assert count == 8


def test_a_private_method_renamed_keeps_its_name_mangling() -> None:
    text, count = drift.rename_in_source(_SOURCE.split("\n", 3)[3], "__reset")
    namespace: dict[str, object] = {}
    exec(compile(text, "<renamed>", "exec"), namespace)
    cls = namespace["Breaker"]
    assert count == 2
    assert "_Breaker__reset_renamed" in vars(cls) and "_Breaker__reset" not in vars(cls)


def _run(points: dict[Point, float], *logs: tuple[str, str, str, str]) -> Run:
    return Run("circuitbreaker", "2.1.3", "CPython 3.12.1", True, "", [], points, list(logs), None, "")


def test_judging_tells_exact_values_from_wrong_ones_and_a_proper_warning_from_silence() -> None:
    expected: dict[Point, float] = breaker("kraken", successes=2, failures=0, rejected=0)
    warning = (
        "otel_trading.instrumentation",
        "WARNING",
        "circuitbreaker 2.1.3 on CPython 3.12.1 is left out: CircuitBreaker.__exit__: names -_last_failure",
        "",
    )
    assert drift.judge(_run(dict(expected)), expected, "circuitbreaker", "_last_failure").outcome == "a"
    swapped = {**expected, **breaker("kraken", successes=0, failures=2, rejected=0)}
    assert drift.judge(_run(swapped, warning), expected, "circuitbreaker", "_last_failure").outcome == "FAIL"
    assert drift.judge(_run({}, warning), expected, "circuitbreaker", "_last_failure").outcome == "b"
    assert drift.judge(_run({}), expected, "circuitbreaker", "_last_failure").outcome == "FAIL"
    assert drift.judge(_run({}, warning), expected, "circuitbreaker", "is_failure").outcome == "FAIL"
    assert drift.judge(_run({}, warning, warning), expected, "circuitbreaker", "_last_failure").outcome == "FAIL"
    error = (warning[0], "ERROR", *warning[2:])
    assert drift.judge(_run({}, error), expected, "circuitbreaker", "_last_failure").outcome == "FAIL"
    no_interpreter = (*warning[:2], warning[2].replace(" on CPython 3.12.1", ""), "")
    assert drift.judge(_run({}, no_interpreter), expected, "circuitbreaker", "_last_failure").outcome == "FAIL"
