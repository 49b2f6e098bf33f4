"""No two modules of the library import each other, not even for types (issue 27): a cycle is where a newcomer's
change breaks something far away. Every import counts — at module level and under ``if TYPE_CHECKING:`` —; only
imports inside functions (loaded on first use, e.g. a provider's SDK) are left out."""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(SHARED).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pushpool"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("pushpool"))
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module(path): _imports(ast.parse(path.read_text())) for path in (SHARED / "pushpool").rglob("*.py")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_library_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []
