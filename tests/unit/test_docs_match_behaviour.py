"""The README and the other guides say what the code does: signatures, defaults, install lines, labels."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from otel_trading import CircuitBreaker, EventBus, start_metrics_server
from otel_trading import metric_contract as mc

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
DOCS = sorted(p for p in REPO.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(REPO).parts))
EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _documented_signature(name: str) -> str:
    match = re.search(rf"`{name}\((.*?)\)`", README, re.S)
    assert match, f"README documents no signature for {name}"
    return " ".join(match.group(1).split())


def _defaults(obj: object) -> dict[str, str]:
    params = inspect.signature(obj).parameters.values()  # type: ignore[arg-type]
    return {
        p.name: ("" if p.default is inspect.Parameter.empty else repr(p.default)).replace("'", '"')
        for p in params
        if p.name != "self"
    }


def test_documented_signatures_list_every_argument_with_its_default() -> None:
    # Old README: start_metrics_server without basic_auth/client_cafile/client_auth_required, and
    # sample_rate=1.0 where the default is None (read from OTEL_TRADING_HISTOGRAM_SAMPLE_RATE).
    for name, obj in (
        ("start_metrics_server", start_metrics_server),
        ("CircuitBreaker", CircuitBreaker),
        ("EventBus", EventBus),
    ):
        documented = _documented_signature(name)
        for arg, default in _defaults(obj).items():
            if arg == "clock":
                default = "time.monotonic"
            expected = f"{arg}={default}" if default else arg
            assert expected in documented.replace("10_000", "10000"), f"{name}: README lacks {expected!r}"


def test_the_readme_names_the_monitoring_guide() -> None:
    assert "monitoring-guide.md" in README and "../shared/spec/monitoring-guide.md" in README


def test_every_doc_shows_the_constant_scope_name_and_schema_url() -> None:
    for doc in DOCS:
        text = doc.read_text()
        for value in re.findall(r'otel_scope_name="([^"]*)"', text):
            assert value == mc.SCOPE_NAME, f"{doc}: otel_scope_name={value!r}"
        for value in re.findall(r'otel_scope_schema_url="([^"]*)"', text):
            assert value == mc.SCHEMA_URL, f"{doc}: otel_scope_schema_url={value!r}"


def test_every_install_line_installs_from_the_checkout_with_an_existing_extra() -> None:
    # otel-trading is not on PyPI: `pip install 'otel-trading[...]'` fails verbatim.
    guides = [doc for doc in DOCS if doc.name != "CHANGELOG.md"]  # the changelog quotes old lines
    lines = [(doc, line) for doc in guides for line in doc.read_text().splitlines() if "pip install" in line]
    assert lines
    for doc, line in lines:
        assert "otel-trading[" not in line.replace("pip install -e", ""), f"{doc}: {line.strip()}"
        for extras in re.findall(r"-e '\.\[([^\]]*)\]'", line):
            for extra in extras.split(","):
                assert extra in EXTRAS, f"{doc}: unknown extra {extra!r} in {line.strip()}"


def test_the_example_and_bench_extras_bring_what_they_import() -> None:
    # Old docs: the example's `pip install 'otel-trading[instrumentation]'` lacked pybreaker
    # (ModuleNotFoundError), and `python bench/run.py --quick` failed after the Quick start install.
    def names(extra: str) -> set[str]:
        out: set[str] = set()
        for req in EXTRAS[extra]:
            name = re.split(r"[\[<>=;! ]", req, maxsplit=1)[0].lower()
            if name == "otel-trading":
                for inner in re.search(r"\[(.*)\]", req).group(1).split(","):  # type: ignore[union-attr]
                    out |= names(inner)
            else:
                out.add(name)
        return out

    assert {"pybreaker", "opentelemetry-instrumentation", "opentelemetry-distro"} <= names("examples")
    assert {"pybreaker", "opentelemetry-exporter-otlp-proto-grpc"} <= names("bench")
    example = (REPO / "examples" / "legacy_bot" / "README.md").read_text()
    assert "pip install -e '.[examples]'" in example
    for doc in (README, (REPO / "bench" / "README.md").read_text()):
        assert "pip install -e '.[bench]'" in doc
