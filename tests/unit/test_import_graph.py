"""The package's import graph: no cycles, and the runtime never imports operator tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import otel_trading

PACKAGE = Path(otel_trading.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """otel_trading modules imported by ``module``, anywhere in it (lazy imports count too),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("otel_trading"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("otel_trading"):
                return
            found.add(target)
            for alias in node.names:  # "from otel_trading import settings" imports a module
                found.add(f"{target}.{alias.name}")

    Visitor().visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path, name) if m in files and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_package_has_no_import_cycle() -> None:
    # A package's __init__ importing its own submodules is how packages expose names, not a cycle
    # of jobs: leave those edges out.
    graph = {
        m: {d for d in deps if not (m.count(".") < d.count(".") and _is_within(d, m))} for m, deps in _graph().items()
    }
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_runtime_module_imports_operator_tooling() -> None:
    graph = _graph()
    offenders = {
        m: sorted(d for d in deps if _is_within(d, "otel_trading.tooling"))
        for m, deps in graph.items()
        # ``python -m otel_trading`` is the CLI's door, not runtime code.
        if not _is_within(m, "otel_trading.tooling") and m != "otel_trading.__main__"
    }
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_graph_sees_imports_that_exist() -> None:
    # Guards the checks above against a parser that finds nothing.
    graph = _graph()
    assert "otel_trading.recording.registry" in graph["otel_trading.circuit_breaker"] or (
        "otel_trading.recording" in graph["otel_trading.circuit_breaker"]
    )
    assert "otel_trading.tooling.dashboard" in graph["otel_trading.tooling.cli"] or any(
        _is_within(d, "otel_trading.tooling") for d in graph["otel_trading.tooling.cli"]
    )


def test_the_cycle_finder_reports_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
