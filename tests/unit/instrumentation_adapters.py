"""One hand-written adapter per instrumented library: what the contract suite needs to know of it.

``tests/unit/test_instrumentation_contract.py`` states the contract once; each adapter says how its
library is driven and how it tells what happened, as a bot would see it:

- ``build()`` makes one instance (a breaker; purgatory's circuit; an emitter with one handler), and
  its operations (``Subject.ops``): ``success``, ``failure`` (a failure the library counts),
  ``excluded`` (an error the library is told to exclude; breakers only) and ``slow`` (a success
  taking 10 ms), plus the library's other operations for the sequence tests. A breaker rejects any
  call once it is open.
- ``view()`` is the library's own state after an operation: what the bot can observe of it.
- ``own_account()`` is what the library itself reported (its listeners, hooks, failure predicate,
  the handlers it ran); ``ledger()`` is everything the exported metrics must say, derived from that
  account and from what the callers saw, never from otel-trading.
- ``exported()`` reads what the metrics say, under the ledger's keys; ``tally()`` is what they must
  say after a known number of each outcome.

The adapters of asyncio APIs (aiobreaker, purgatory's async breaker, pyee's asyncio emitter) run
each operation on an event loop of the calling thread (``Loops``), so threads can share one instance.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
import pyee
import pyee.asyncio
import pyee.executor
import pytest
from purgatory.domain import model

import otel_trading.instrumentation as instrumentation
from otel_trading.instrumentation import LibraryInstrumentor
from otel_trading.instrumentation._core.binding import BreakerBinding
from otel_trading.instrumentation.pyee import hooks as pyee_hooks
from otel_trading.metric_contract import METRICS_BY_KEY

from ..conftest import Metrics, breaker_counts, breaker_latency, breaker_transitions

N = {key: spec.otel_name for key, spec in METRICS_BY_KEY.items()}

#: A caller's view of one operation: ("returned", value) or ("raised", exception type, message).
Outcome = tuple[Any, ...]
#: Operation sequences, each with the ``build()`` arguments it runs on.
Examples = tuple[tuple[tuple[str, ...], dict[str, Any]], ...]

#: What the guarded code is asked to do (``act``).
OK, SLOW, FAIL, EXCLUDED = "ok", "slow", "fail", "excluded"
#: purgatory's predicate excludes a KeyError by its message.
KEY_EXCLUDED, KEY_FAILURE = "key excluded", "key failure"

#: The operations that are calls, and the outcome each asks for.
CALLS = {"success": OK, "slow": SLOW, "failure": FAIL, "excluded": EXCLUDED}
_serials = itertools.count()
#: The state gauge's codes for the breakers' states, by the metrics' state labels.
STATE_CODES = {"closed": 0, "open": 1, "half_open": 2}


class VenueDown(ConnectionError):
    """A failure: the venue did not answer."""


class Rejected(Exception):
    """A business error: the venue answered no. Every breaker here is told to exclude it."""


def _error(arg: str) -> Exception | None:
    return {
        FAIL: VenueDown("down"),
        EXCLUDED: Rejected("insufficient funds"),
        KEY_EXCLUDED: KeyError(KEY_EXCLUDED),
        KEY_FAILURE: KeyError(KEY_FAILURE),
    }.get(arg)


def _excluded_key(exc: KeyError) -> bool:
    return exc.args == (KEY_EXCLUDED,)


@dataclass
class Probe:
    """What the guarded code did (``runs``: one entry per run, thread-safe appends) and what the
    library said about it (``said``: its listener callbacks, hook events, verdicts)."""

    runs: list[str] = field(default_factory=list)
    said: list[tuple[Any, ...]] = field(default_factory=list)


def act(probe: Probe, arg: str) -> str:
    """The guarded code: the bot's call to the venue."""
    probe.runs.append(arg)
    if arg == SLOW:
        time.sleep(0.01)
    error = _error(arg)
    if error is not None:
        raise error
    return "filled"


async def act_async(probe: Probe, arg: str) -> str:
    await asyncio.sleep(0)
    return act(probe, arg)


def ticks(probe: Probe, arg: str) -> Iterator[int]:
    """A guarded generator: fails between its items when asked to."""
    yield 1
    act(probe, arg)
    yield 2


class Loops:
    """One event loop per calling thread, each closed by ``close()``."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()

    def run(self, awaitable: Awaitable[Any]) -> Any:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._all.append(loop)
        return loop.run_until_complete(awaitable)

    def close(self) -> None:
        for loop in self._all:
            loop.close()


@dataclass
class Subject:
    """One instance of a library, as the contract drives it."""

    #: The series label: the breaker's name, the emitter's event type.
    name: str
    target: Any
    probe: Probe
    ops: dict[str, Callable[[], Any]]
    #: The library's own state when built (``view()``).
    start: Any = None


@dataclass(frozen=True)
class Step:
    """One operation as everything but otel-trading saw it."""

    op: str
    outcome: Outcome
    #: the guarded code ran
    ran: bool
    #: what the library said meanwhile (``Probe.said``)
    said: tuple[tuple[Any, ...], ...]
    #: the library's own state after it
    view: Any


class Adapter(ABC):
    """How the contract drives one library and reads its own account."""

    #: The id in the contract's parametrization.
    id: ClassVar[str]
    #: The library's import name, also its instrumentor's ``target``.
    library: ClassVar[str]
    #: The class name of the library's own instrumentor in ``otel_trading.instrumentation``.
    instrumentor_name: ClassVar[str]
    #: The outcomes the library has, of "success", "failure", "excluded" and "rejection".
    outcomes: ClassVar[frozenset[str]]
    #: Every method instrumentation patches: its names by "module.Class".
    patched: ClassVar[dict[str, tuple[str, ...]]]
    #: Parameters of ``build()`` the sequence tests draw, each from its values.
    variants: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: What a caller may get instead of its call's own outcome when threads share one instance, by
    #: a race in the library's own code (with or without otel-trading).
    thread_races: ClassVar[frozenset[Outcome]] = frozenset()
    #: Sequences the sequence tests always run: (operations, variant).
    examples: ClassVar[Examples] = ()

    def __init__(self) -> None:
        self.loops = Loops()

    def close(self) -> None:
        self.loops.close()

    def patched_names(self) -> list[str]:
        return sorted(f"{owner}.{name}" for owner, names in self.patched.items() for name in names)

    def instrumentor(self) -> LibraryInstrumentor:
        """The library's own instrumentor (a singleton, as every OpenTelemetry instrumentor)."""
        cls: type[LibraryInstrumentor] = getattr(instrumentation, self.instrumentor_name)
        return cls()

    def build(self, name: str, fail_max: int = 10**9, **variant: Any) -> Subject:
        """A new instance, labelled ``name`` and a serial number (instances of earlier tests may
        still be alive, in reference cycles, and instrument() rightly finds them), whose calls count
        ``fail_max`` consecutive failures before it opens."""
        subject = self.make(f"{name}-{next(_serials)}", fail_max, variant)
        subject.start = self.view(subject)
        return subject

    @abstractmethod
    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        """The instance ``build()`` returns; ``options`` are the library's own (``variants``)."""

    def sequence_ops(self) -> list[str]:
        """The operations the sequence tests draw from: all but the slow call."""
        return sorted(op for op in self.make("ops", 1, {}).ops if op != "slow")

    @abstractmethod
    def view(self, subject: Subject) -> Any: ...

    @abstractmethod
    def own_account(self, subject: Subject) -> dict[str, Any]: ...

    @abstractmethod
    def ledger(self, subject: Subject, steps: list[Step]) -> dict[str, Any]: ...

    @abstractmethod
    def exported(self, m: Metrics, subject: Subject) -> dict[str, Any]: ...

    @abstractmethod
    def tally(self, done: Counter[str]) -> dict[str, int]: ...

    @abstractmethod
    def latency(self, m: Metrics, subject: Subject) -> tuple[int, float]:
        """(count, sum) of the histogram timing ``subject``'s calls or events."""

    @abstractmethod
    def gauge(self, subject: Subject) -> int | None:
        """What the instance's gauge must read now, from the library's own state."""

    @abstractmethod
    def break_recording(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the recording layer under this library's hooks raise on every use."""

    def made_by_library(self) -> list[tuple[Callable[..., Any], Callable[..., Any] | None]]:
        """Functions the library makes (decorated, bound), each with the bot's function it wraps."""
        return []

    def forget(self) -> None:
        """Drop what the library keeps of earlier instances for ever (circuitbreaker's monitor)."""
        return None

    def classes(self) -> list[type]:
        """Every class of the library's loaded modules."""
        modules = [m for n, m in list(sys.modules.items()) if n == self.library or n.startswith(f"{self.library}.")]
        found = {
            obj: None
            for module in modules
            for obj in vars(module).values()
            if isinstance(obj, type) and obj.__module__.split(".")[0] == self.library
        }
        return list(found)

    def scenario(self) -> list[str]:
        """Successes, excluded errors and failures on a breaker of ``fail_max=2`` (which opens it),
        then calls it rejects: each outcome the library has."""
        ops = ["success"] * 3 + ["excluded"] * 2 * ("excluded" in self.outcomes) + ["failure"] * 2
        return ops + ["success"] * 2 * ("rejection" in self.outcomes)

    def scenario_tally(self) -> Counter[str]:
        done = Counter(op for op in self.scenario())
        if "rejection" in self.outcomes:
            done["success"] -= 2
            done["rejection"] = 2
        return done

    def message(self, exc: BaseException) -> str:
        return str(exc)

    def run(self, subject: Subject, op: str) -> Outcome:
        try:
            result = subject.ops[op]()
            if inspect.isawaitable(result):
                result = self.loops.run(result)
        except Exception as exc:
            return ("raised", type(exc).__name__, self.message(exc).replace(subject.name, "{name}"))
        return ("returned", result)

    def play(self, subject: Subject, ops: list[str] | tuple[str, ...]) -> list[Step]:
        steps = []
        for op in ops:
            ran, said = len(subject.probe.runs), len(subject.probe.said)
            outcome = self.run(subject, op)
            new = tuple(subject.probe.said[said:])
            steps.append(Step(op, outcome, len(subject.probe.runs) > ran, new, self.view(subject)))
        return steps


# -- breakers -------------------------------------------------------------------------------------------


class BreakerAdapter(Adapter):
    """A circuit breaker: successes, failures and rejections per name, latency, state, transitions."""

    outcomes = frozenset({"success", "failure", "excluded", "rejection"})
    #: The exception the library raises for a call it rejects.
    rejection: ClassVar[type[BaseException]]
    #: The metrics' state labels, by the library's state names.
    state_labels: ClassVar[dict[str, str]]

    def exported(self, m: Metrics, subject: Subject) -> dict[str, Any]:
        successes, failures, rejected = breaker_counts(m, subject.name)
        return {
            "successes": successes or 0,
            "failures": failures or 0,
            "rejected": rejected or 0,
            "timed": self.latency(m, subject)[0],
            "transitions": breaker_transitions(m, subject.name),
            "gauge": m.value(N["breaker_state"], name=subject.name),
        }

    def latency(self, m: Metrics, subject: Subject) -> tuple[int, float]:
        return breaker_latency(m, subject.name)

    def tally(self, done: Counter[str]) -> dict[str, int]:
        successes = done["success"] + done["slow"] + done["excluded"]
        return {
            "successes": successes,
            "failures": done["failure"],
            "rejected": done["rejection"],
            "timed": successes + done["failure"],
        }

    def rejected(self, steps: list[Step]) -> int:
        """Calls the library refused: its rejection raised, the guarded code never ran."""
        name = self.rejection.__name__
        return sum(1 for s in steps if s.outcome[:2] == ("raised", name) and not s.ran)

    @abstractmethod
    def transitions(self, subject: Subject, steps: list[Step]) -> dict[tuple[str, str], int]:
        """The state changes the library made, by the metrics' state labels."""

    def ledger(self, subject: Subject, steps: list[Step]) -> dict[str, Any]:
        own = self.own_account(subject)
        return {
            **own,
            "rejected": self.rejected(steps),
            "timed": own["successes"] + own["failures"],
            "transitions": self.transitions(subject, steps),
            "gauge": self.gauge(subject),
        }

    def break_recording(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("bug in otel-trading")

        for method in ("count", "transition", "observe_state"):
            monkeypatch.setattr(BreakerBinding, method, broken)


class ListenedBreaker(BreakerAdapter):
    """pybreaker and aiobreaker: the library's listener callbacks are its own account."""

    def label(self, state: Any) -> str:
        return self.state_labels[state]

    def listener(self, probe: Probe) -> Any:
        adapter = self

        class Listener(self.listener_base()):  # type: ignore[misc]
            def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
                probe.said.append(("before_call",))

            def success(self, breaker: Any) -> None:
                probe.said.append(("success",))

            def failure(self, breaker: Any, exc: BaseException) -> None:
                probe.said.append(("failure", type(exc).__name__))

            def state_change(self, breaker: Any, old: Any, new: Any) -> None:
                probe.said.append(("state", adapter.state_of(old), adapter.state_of(new)))

        return Listener()

    @abstractmethod
    def listener_base(self) -> type: ...

    @abstractmethod
    def state_of(self, state_object: Any) -> str | None: ...

    def own_account(self, subject: Subject) -> dict[str, Any]:
        said = list(subject.probe.said)
        return {
            "successes": said.count(("success",)),
            "failures": sum(1 for event in said if event[0] == "failure"),
        }

    def transitions(self, subject: Subject, steps: list[Step]) -> dict[tuple[str, str], int]:
        """Its listeners' state changes, but for a state forced again (pybreaker tells of open -> open)."""
        changes = [event[1:] for event in subject.probe.said if event[0] == "state"]
        return dict(Counter((self.label(old), self.label(new)) for old, new in changes if old not in (None, new)))


class PybreakerAdapter(ListenedBreaker):
    id = library = "pybreaker"
    instrumentor_name = "PybreakerInstrumentor"
    rejection = pybreaker.CircuitBreakerError
    patched = {
        "pybreaker.CircuitBreaker": ("__init__", "_create_new_state", "_inc_counter", "call", "name"),
        "pybreaker.CircuitBreakerState": ("_handle_error", "call_async", "generator_call"),
        "pybreaker.CircuitOpenState": ("before_call",),
    }
    state_labels = {"closed": "closed", "open": "open", "half-open": "half_open"}
    variants: ClassVar[dict[str, tuple[Any, ...]]] = {
        "fail_max": (1, 2, 3, 4),
        "reset_timeout": (0, 3600),
        "success_threshold": (1, 2),
    }
    examples: ClassVar[Examples] = (
        (("open", "open"), {}),  # pybreaker tells its listeners of open -> open: no transition
        (("failure", "failure"), {"fail_max": 1, "reset_timeout": 0}),  # a failed half-open trial
        (("failure", "success"), {"fail_max": 1, "reset_timeout": 0}),  # a trial that closes it
        (("open", "half_open", "close", "half_open"), {}),
        (("calling_failure", "calling_success", "generator", "decorated"), {"fail_max": 1}),
    )

    def listener_base(self) -> type:
        return pybreaker.CircuitBreakerListener

    def state_of(self, state_object: Any) -> str | None:
        return state_object.name if state_object is not None else None

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        probe = Probe()
        breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=options.get("reset_timeout", 3600),
            success_threshold=options.get("success_threshold", 1),
            exclude=[Rejected],
            listeners=[self.listener(probe)],
            name=name,
        )

        def calling(arg: str) -> str:
            with breaker.calling():
                return act(probe, arg)

        ops: dict[str, Callable[[], Any]] = {op: _bound(breaker.call, act, probe, arg) for op, arg in CALLS.items()}
        ops.update(
            decorated=lambda: breaker(act)(probe, OK),
            generator=lambda: list(breaker.call(ticks, probe, OK)),
            calling_success=lambda: calling(OK),
            calling_failure=lambda: calling(FAIL),
            open=breaker.open,
            close=breaker.close,
            half_open=breaker.half_open,
        )
        return Subject(name, breaker, probe, ops)

    def view(self, subject: Subject) -> Any:
        b = subject.target
        return (b.current_state, b.state.name, b.fail_counter, b.success_counter, len(b.listeners), sorted(vars(b)))

    def gauge(self, subject: Subject) -> int | None:
        return STATE_CODES[self.label(subject.target.current_state)]

    def made_by_library(self) -> list[tuple[Callable[..., Any], Callable[..., Any] | None]]:
        return [(pybreaker.CircuitBreaker(name="x")(act), act)]


class AiobreakerAdapter(ListenedBreaker):
    id = library = "aiobreaker"
    instrumentor_name = "AiobreakerInstrumentor"
    rejection = aiobreaker.CircuitBreakerError
    patched = {
        "aiobreaker.circuitbreaker.CircuitBreaker": ("__init__", "_create_new_state", "_inc_counter"),
        "aiobreaker.state.CircuitBreakerBaseState": ("_handle_error", "call", "call_async", "generator_call"),
        "aiobreaker.state.CircuitOpenState": ("before_call",),
    }
    state_labels = {"CLOSED": "closed", "OPEN": "open", "HALF_OPEN": "half_open"}
    variants: ClassVar[dict[str, tuple[Any, ...]]] = {
        "fail_max": (1, 2, 3),
        "timeout": (timedelta(0), timedelta(hours=1)),
    }
    examples: ClassVar[Examples] = (
        (("failure", "failure", "success"), {"fail_max": 1, "timeout": timedelta(0)}),
        (("open", "open", "half_open", "success"), {}),
        (("decorated", "sync_success", "excluded", "sync_failure", "decorated"), {"fail_max": 1}),
    )

    def listener_base(self) -> type:
        return aiobreaker.CircuitBreakerListener

    def state_of(self, state_object: Any) -> str | None:
        return state_object.state.name if state_object is not None else None

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        probe = Probe()
        breaker = aiobreaker.CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=options.get("timeout", timedelta(hours=1)),
            exclude=[Rejected],
            listeners=[self.listener(probe)],
            name=name,
        )
        ops: dict[str, Callable[[], Any]] = {
            op: _bound(breaker.call_async, act_async, probe, arg) for op, arg in CALLS.items()
        }
        ops.update(
            sync_success=_bound(breaker.call, act, probe, OK),
            sync_failure=_bound(breaker.call, act, probe, FAIL),
            decorated=lambda: breaker(act_async)(probe, OK),
            open=breaker.open,
            close=breaker.close,
            half_open=breaker.half_open,
        )
        return Subject(name, breaker, probe, ops)

    def message(self, exc: BaseException) -> str:
        return getattr(exc, "message", str(exc))  # CircuitBreakerError: its message, not its timestamp

    def view(self, subject: Subject) -> Any:
        b = subject.target
        return (b.current_state.name, b.fail_counter, len(b.listeners), sorted(vars(b)))

    def gauge(self, subject: Subject) -> int | None:
        return STATE_CODES[self.label(subject.target.current_state.name)]

    def made_by_library(self) -> list[tuple[Callable[..., Any], Callable[..., Any] | None]]:
        breaker = aiobreaker.CircuitBreaker(name="x")
        return [(breaker(act_async), act_async), (breaker(act), act), (breaker.call_async, None), (breaker.call, None)]


class CircuitbreakerAdapter(BreakerAdapter):
    """circuitbreaker: no listeners; its own account is its failure predicate's verdicts (the
    breaker's ``expected_exception`` here is the probe's predicate)."""

    id = library = "circuitbreaker"
    instrumentor_name = "CircuitbreakerInstrumentor"
    rejection = circuitbreaker.CircuitBreakerError
    patched = {
        "circuitbreaker.CircuitBreaker": (
            "_CircuitBreaker__call_failed",
            "__init__",
            "call",
            "call_async",
            "call_async_generator",
            "call_generator",
            "decorate",
        ),
        "circuitbreaker.CircuitBreakerError": ("__init__",),
    }
    variants: ClassVar[dict[str, tuple[Any, ...]]] = {"fail_max": (1, 2, 3)}
    examples: ClassVar[Examples] = (
        (("failure", "reset", "failure"), {"fail_max": 1}),  # a reset nobody observed, then a failure
        (("failure", "time_passes", "reset", "success"), {"fail_max": 1}),  # a half-open period nobody observed
        (("failure", "time_passes", "generator_failure", "time_passes", "async_success", "success"), {"fail_max": 1}),
        (("failure", "time_passes"), {"fail_max": 1}),  # half-open, as the library reads its timer
    )
    state_labels = {"closed": "closed", "open": "open", "half_open": "half_open"}

    def __init__(self) -> None:
        super().__init__()
        self.forget()

    def close(self) -> None:
        super().close()
        self.forget()

    def forget(self) -> None:
        # Every decorated breaker registers in this class-level dict for ever (the library's own test
        # suite resets it the same way); earlier tests' breakers would be bound by each instrument().
        circuitbreaker.CircuitBreakerMonitor.circuit_breakers = {}

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        probe = Probe()

        def judge(exc_type: type[BaseException], exc: BaseException) -> bool:
            failed = isinstance(exc, VenueDown)
            probe.said.append(("judged", type(exc).__name__, failed))
            return failed

        breaker = circuitbreaker.CircuitBreaker(
            failure_threshold=fail_max, recovery_timeout=600, expected_exception=judge, name=name
        )

        @breaker
        def order(arg: str) -> str:
            return act(probe, arg)

        @breaker
        def feed(arg: str) -> Iterator[int]:
            yield from ticks(probe, arg)

        @breaker
        async def order_async(arg: str) -> str:
            return await act_async(probe, arg)

        def time_passes() -> None:
            breaker._opened -= 10_000  # the library reads its timer: ``_opened`` + the recovery timeout

        ops: dict[str, Callable[[], Any]] = {op: _bound(order, arg) for op, arg in CALLS.items()}
        ops.update(
            generator_success=lambda: list(feed(OK)),
            generator_failure=lambda: list(feed(FAIL)),
            async_success=_bound(order_async, OK),
            async_failure=_bound(order_async, FAIL),
            time_passes=time_passes,
            reset=breaker.reset,
        )
        return Subject(name, breaker, probe, ops)

    def message(self, exc: BaseException) -> str:
        return str(exc).split(" OPEN until ")[0]

    def view(self, subject: Subject) -> Any:
        b = subject.target
        monitored = circuitbreaker.CircuitBreakerMonitor.get(b.name) is b
        return (b.state, b.failure_count, repr(b.last_failure), sorted(vars(b)), monitored)

    def own_account(self, subject: Subject) -> dict[str, Any]:
        failures = sum(1 for event in list(subject.probe.said) if event[0] == "judged" and event[2])
        return {"successes": len(subject.probe.runs) - failures, "failures": failures}

    def transitions(self, subject: Subject, steps: list[Step]) -> dict[tuple[str, str], int]:
        """The library has no transition events: its half-open state is a reading of a timer.
        Transitions are the changes between the readings of ``state`` before and after each call
        through the breaker (rejected ones included) and at the collection."""
        readings = ["closed"]
        before = subject.start
        for step in steps:
            if step.ran or step.outcome[:2] == ("raised", self.rejection.__name__):
                readings += [before[0], step.view[0]]
            before = step.view
        readings.append(subject.target.state)
        return dict(Counter((a, b) for a, b in itertools.pairwise(readings) if a != b))

    def gauge(self, subject: Subject) -> int | None:
        return STATE_CODES[self.state_labels[subject.target.state]]

    def made_by_library(self) -> list[tuple[Callable[..., Any], Callable[..., Any] | None]]:
        def f() -> None: ...

        async def g() -> None: ...

        def h() -> Iterator[int]:
            yield 1

        async def i() -> AsyncIterator[int]:
            yield 1

        return [(circuitbreaker.CircuitBreaker(name="x")(fn), fn) for fn in (f, g, h, i)]


class PurgatoryAdapter(BreakerAdapter):
    """purgatory's sync breaker: decorated calls and ``with`` blocks on one circuit; its hooks
    (``factory.add_listener``) are its own account."""

    id = library = "purgatory"
    instrumentor_name = "PurgatoryInstrumentor"
    rejection = model.OpenedState
    patched = {
        "purgatory.domain.model.ClosedState": ("handle_exception",),
        "purgatory.domain.model.Context": ("__init__", "set_state"),
        "purgatory.domain.model.HalfOpenedState": ("handle_exception",),
        "purgatory.domain.model.OpenedState": ("handle_exception",),
        "purgatory.service._async.circuitbreaker.AsyncCircuitBreaker": ("__aenter__", "__aexit__"),
        "purgatory.service._sync.circuitbreaker.SyncCircuitBreaker": ("__enter__", "__exit__"),
    }
    variants: ClassVar[dict[str, tuple[Any, ...]]] = {"fail_max": (1, 2, 3)}
    examples: ClassVar[Examples] = (
        (("failure", "time_passes", "failure", "time_passes", "success", "success"), {"fail_max": 1}),
        (("key_failure", "key_excluded", "excluded", "block_failure", "block_failure", "success"), {"fail_max": 2}),
    )
    #: A block's exit drains the circuit's shared message list (``while context.messages:
    #: ... messages.pop(0)``), not atomically: another thread can take the last message between the
    #: test and the pop, and the exit raises IndexError into its caller, after the library decided
    #: the call's outcome (which is what is counted).
    thread_races = frozenset({("raised", "IndexError", "pop from empty list")})
    #: Exclusions by type for every circuit of the factory, by predicate for this circuit.
    exclude: ClassVar[list[Any]] = [(KeyError, _excluded_key)]
    state_labels = {"closed": "closed", "opened": "open", "half-opened": "half_open"}

    def factory(self, fail_max: int) -> Any:
        return purgatory.SyncCircuitBreakerFactory(default_threshold=fail_max, default_ttl=600, exclude=[Rejected])

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        probe = Probe()
        factory = self.factory(fail_max)
        factory.add_listener(
            lambda circuit, kind, event: probe.said.append(
                (kind, getattr(event, "state", None), getattr(event, "failure_count", None))
            )
        )
        self.loops_run(factory.get_breaker(name, exclude=self.exclude))  # the circuit exists from now on
        ops = self.operations(factory, name, probe)

        def time_passes() -> None:
            context = factory.uow.contexts.breakers.get(name)  # the in-memory repository's own table
            if context is not None and context._state.opened_at is not None:
                context._state.opened_at -= 10_000  # purgatory compares ``opened_at + ttl`` with the time

        ops["time_passes"] = time_passes
        return Subject(name, factory, probe, ops)

    def loops_run(self, result: Any) -> Any:
        return self.loops.run(result) if inspect.isawaitable(result) else result

    def operations(self, factory: Any, name: str, probe: Probe) -> dict[str, Callable[[], Any]]:
        decorated = factory(name, exclude=self.exclude)(lambda arg: act(probe, arg))

        def block(arg: str) -> str:
            with factory.get_breaker(name, exclude=self.exclude):
                return act(probe, arg)

        ops: dict[str, Callable[[], Any]] = {op: _bound(decorated, arg) for op, arg in CALLS.items()}
        ops.update(
            slow=_bound(block, SLOW),  # timed over the whole block
            key_excluded=_bound(decorated, KEY_EXCLUDED),
            key_failure=_bound(decorated, KEY_FAILURE),
            block_success=_bound(block, OK),
            block_failure=_bound(block, FAIL),
        )
        return ops

    def context(self, subject: Subject) -> Any:
        return subject.target.uow.contexts.breakers.get(subject.name)

    def view(self, subject: Subject) -> Any:
        c = self.context(subject)
        return (c.state, c.failure_count, c.threshold, c.ttl)

    def own_account(self, subject: Subject) -> dict[str, Any]:
        """A failure is a ``failed`` hook event, or the reopening of a half-open circuit (which
        purgatory reports as a state change only)."""
        failures, state = 0, "closed"
        for kind, new, _ in list(subject.probe.said):
            if kind == "failed":
                failures += 1
            elif kind == "state_changed":
                failures += state == "half-opened" and new == "opened"
                state = new
        return {"successes": len(subject.probe.runs) - failures, "failures": failures}

    def transitions(self, subject: Subject, steps: list[Step]) -> dict[tuple[str, str], int]:
        """Its hooks' state changes, each from the state before it."""
        moves: Counter[tuple[str, str]] = Counter()
        state = "closed"
        for kind, new, _ in subject.probe.said:
            if kind == "state_changed":
                moves[(self.state_labels[state], self.state_labels[new])] += 1
                state = new
        return dict(moves)

    def gauge(self, subject: Subject) -> int | None:
        return STATE_CODES[self.state_labels[self.context(subject).state]]

    def made_by_library(self) -> list[tuple[Callable[..., Any], Callable[..., Any] | None]]:
        return [
            (purgatory.SyncCircuitBreakerFactory()("x")(act), act),
            (purgatory.AsyncCircuitBreakerFactory()("x")(act_async), act_async),
        ]


class PurgatoryAsyncAdapter(PurgatoryAdapter):
    """purgatory's async breaker: decorated coroutines and ``async with`` blocks."""

    id = "purgatory-async"
    examples: ClassVar[Examples] = (
        (("success", "failure", "failure", "success", "block_failure"), {"fail_max": 2}),
        (("failure", "success", "block_failure", "block_failure", "success", "success"), {"fail_max": 2}),
        (("failure", "time_passes", "block_success", "excluded"), {"fail_max": 1}),
    )

    def factory(self, fail_max: int) -> Any:
        return purgatory.AsyncCircuitBreakerFactory(default_threshold=fail_max, default_ttl=600, exclude=[Rejected])

    def operations(self, factory: Any, name: str, probe: Probe) -> dict[str, Callable[[], Any]]:
        async def order(arg: str) -> str:
            return await act_async(probe, arg)

        decorated = factory(name, exclude=self.exclude)(order)

        async def block(arg: str) -> str:
            async with await factory.get_breaker(name, exclude=self.exclude):
                return await act_async(probe, arg)

        ops: dict[str, Callable[[], Any]] = {op: _bound(decorated, arg) for op, arg in CALLS.items()}
        ops.update(
            slow=_bound(block, SLOW),  # timed over the whole block
            block_success=_bound(block, OK),
            block_failure=_bound(block, FAIL),
        )
        return ops


# -- event buses ----------------------------------------------------------------------------------------


class PyeeAdapter(Adapter):
    """pyee's base emitter: handlers run inline; a failing handler's exception reaches the caller."""

    id = library = "pyee"
    instrumentor_name = "PyeeInstrumentor"
    outcomes = frozenset({"success", "failure"})
    patched = {
        "pyee.asyncio.AsyncIOEventEmitter": ("_emit_run",),
        "pyee.base.EventEmitter": ("__init__", "_call_handlers"),
        "pyee.executor.ExecutorEventEmitter": ("_emit_run",),
    }
    examples: ClassVar[Examples] = (
        (("on", "once", "success", "success", "failure", "remove", "remove", "success"), {}),
        (("remove", "success", "on", "failure"), {}),
    )
    emits = ("success", "slow", "failure")
    #: The handlers of a new emitter that fail on a failing emit (the base emitter stops at the first).
    failing_handlers = 1

    def emitter(self, probe: Probe) -> Any:
        return pyee.EventEmitter()

    def handler(self, probe: Probe) -> Callable[[str], Any]:
        def handler(arg: str) -> None:
            act(probe, arg)

        return handler

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        probe = Probe()
        ee = self.emitter(probe)
        ee.on(name, self.handler(probe))

        def emit(arg: str) -> Any:
            return ee.emit(name, arg)

        def on(handler: Callable[..., Any], once: bool = False) -> None:
            (ee.once if once else ee.on)(name, handler)

        def remove() -> None:
            handlers = ee.listeners(name)
            if handlers:
                ee.remove_listener(name, handlers[0])

        ops: dict[str, Callable[[], Any]] = {op: _bound(emit, CALLS[op]) for op in self.emits}
        ops.update(
            on=lambda: on(self.handler(probe)),
            once=lambda: on(self.handler(probe), once=True),
            remove=remove,
        )
        return Subject(name, ee, probe, ops)

    def view(self, subject: Subject) -> Any:
        ee = subject.target
        events = sorted("{name}" if event == subject.name else event for event in ee.event_names())
        return (events, len(ee.listeners(subject.name)), sorted(vars(ee)))

    def own_account(self, subject: Subject) -> dict[str, Any]:
        """The handlers that failed, as they ran."""
        return {"errors": subject.probe.runs.count(FAIL)}

    def ledger(self, subject: Subject, steps: list[Step]) -> dict[str, Any]:
        """Every emit is published; processed once its handlers ran, if it had any."""
        published = processed = 0
        before = subject.start
        for step in steps:
            if step.op in self.emits:
                published += 1
                processed += before[1] > 0
            before = step.view
        return {
            "published": published,
            "processed": processed,
            **self.own_account(subject),
            "timed": processed,
            "gauge": self.gauge(subject),
        }

    def exported(self, m: Metrics, subject: Subject) -> dict[str, Any]:
        event = subject.name
        return {
            "published": m.value(N["bus_published"], event_type=event) or 0,
            "processed": m.value(N["bus_processed"], event_type=event) or 0,
            "errors": m.value(N["bus_handler_errors"], event_type=event) or 0,
            "timed": self.latency(m, subject)[0],
            "gauge": m.value(N["bus_subscribers"], event_type=event) or 0,
        }

    def latency(self, m: Metrics, subject: Subject) -> tuple[int, float]:
        point = m.histogram(N["bus_processing_duration"], event_type=subject.name)
        return (point.count, point.sum) if point is not None else (0, 0.0)

    def tally(self, done: Counter[str]) -> dict[str, int]:
        emitted = done["success"] + done["slow"] + done["failure"]
        errors = done["failure"] * self.failing_handlers
        return {"published": emitted, "processed": emitted, "errors": errors, "timed": emitted}

    def gauge(self, subject: Subject) -> int | None:
        return len(subject.target.listeners(subject.name))

    def break_recording(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(*args: Any) -> None:
            raise RuntimeError("bug in otel-trading")

        monkeypatch.setattr(pyee_hooks._Event, "observe", broken)
        monkeypatch.setattr(pyee_hooks._Event, "error", broken)


class PyeeAsyncioAdapter(PyeeAdapter):
    """pyee's asyncio emitter with a plain handler, run inline, and a coroutine handler, run as a
    task; a failing handler's exception becomes pyee's ``error`` event (its own account of errors).
    Each emit waits for the handler tasks of its own thread's loop."""

    id = "pyee-asyncio"
    failing_handlers = 2
    examples: ClassVar[Examples] = (
        (("on_sync", "on", "success", "failure", "failure", "remove", "success"), {}),
        (("on", "once", "success", "success", "failure"), {}),
    )

    def emitter(self, probe: Probe) -> Any:
        ee = pyee.asyncio.AsyncIOEventEmitter()
        ee.on("error", lambda exc: probe.said.append(("error", type(exc).__name__)))
        return ee

    def handler(self, probe: Probe) -> Callable[[str], Any]:
        async def handler(arg: str) -> None:
            await act_async(probe, arg)

        return handler

    def make(self, name: str, fail_max: int, options: dict[str, Any]) -> Subject:
        subject = super().make(name, fail_max, options)
        emit = subject.ops

        async def settled(op: str) -> Any:
            # The handler tasks this emit makes, seen through this loop's task factory: not through
            # asyncio.all_tasks(), whose global WeakSet CPython 3.10 reads racily from many threads
            # (one threaded run raised "__len__() should return >= 0" from it).
            loop = asyncio.get_running_loop()
            made: list[asyncio.Task[Any]] = []

            def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
                task = asyncio.Task(coro, loop=loop, **kwargs)
                made.append(task)
                return task

            loop.set_task_factory(factory)
            try:
                result = emit[op]()
            finally:
                loop.set_task_factory(None)
            if made:
                await asyncio.wait(made)
            await asyncio.sleep(0)  # the tasks' done-callbacks
            return result

        def on_sync() -> None:
            subject.target.on(subject.name, PyeeAdapter.handler(self, subject.probe))

        on_sync()
        subject.ops = {**emit, **{op: _bound(settled, op) for op in self.emits}, "on_sync": on_sync}
        return subject

    def own_account(self, subject: Subject) -> dict[str, Any]:
        return {"errors": sum(1 for event in list(subject.probe.said) if event[0] == "error")}


def _bound(func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``func`` with its arguments: one operation."""
    return lambda: func(*args)


ADAPTERS: dict[str, type[Adapter]] = {
    cls.id: cls
    for cls in (
        PybreakerAdapter,
        AiobreakerAdapter,
        CircuitbreakerAdapter,
        PurgatoryAdapter,
        PurgatoryAsyncAdapter,
        PyeeAdapter,
        PyeeAsyncioAdapter,
    )
}
#: One adapter per library (its main API): what the class-level contract runs on.
LIBRARIES = ("pybreaker", "aiobreaker", "circuitbreaker", "purgatory", "pyee")
#: Every adapter: what the behaviour contract runs on.
SUBJECTS = tuple(ADAPTERS)
