"""engines/ imports in one direction: no module imports, directly or through others, a module that
imports it back, counting imports inside functions too (a lazy import hides a circle from Python,
not from the reader). The layers: card, frames and cache at the bottom; quantize and gate above
them; precision above both; the backends and toolchain on top."""
from __future__ import annotations

import ast
from pathlib import Path

import holoburn.engines

ENGINES = Path(holoburn.engines.__file__).resolve().parent
PACKAGE = "holoburn.engines"


def _engine_module(name: str) -> str | None:
    """`holoburn.engines.gate` (or `holoburn.engines.gate.x`) -> "gate"; anything else -> None."""
    if name.startswith(PACKAGE + "."):
        return name[len(PACKAGE) + 1 :].split(".")[0]
    return None


def imports_of(path: Path) -> set[str]:
    """Names of the engines/ modules that `path` imports anywhere in its body (module level or in functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(m for m in (_engine_module(a.name) for a in node.names) if m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from .gate import x`, `from . import gate`
                base = PACKAGE if node.level == 1 else None
                module = f"{base}.{node.module}" if base and node.module else base
            else:
                module = node.module
            if module == PACKAGE:  # `from holoburn.engines import toolchain`
                found.update(a.name for a in node.names)
            elif module and _engine_module(module):
                found.add(_engine_module(module))
    return found


def import_graph() -> dict[str, set[str]]:
    """engines/ module name -> the engines/ modules it imports (engines/models/ holds no code)."""
    modules = {p.stem: p for p in ENGINES.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_engines_import_graph_has_no_circle():
    graph = import_graph()
    assert {"card", "frames", "gate", "precision", "quantize"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "engines/ import circle: " + " -> ".join(cycle)


def test_the_conversion_chain_points_one_way():
    graph = import_graph()
    assert graph["card"] == set() and graph["frames"] == set()
    assert graph["quantize"] <= {"card"}
    assert "precision" not in graph["gate"] | graph["quantize"] and "quantize" not in graph["gate"]
    assert {"gate", "quantize"} <= graph["precision"]


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from holoburn.engines.b import x\n")
    (tmp_path / "b.py").write_text("from . import a\nimport holoburn.engines.card\n")
    assert imports_of(tmp_path / "a.py") == {"b"} and imports_of(tmp_path / "b.py") == {"a", "card"}
    assert find_cycle({"a": {"b"}, "b": {"a", "card"}, "card": set()}) == ["a", "b", "a"]
    assert find_cycle({"precision": {"gate", "quantize"}, "gate": {"card"}, "quantize": {"card"}, "card": set()}) is None
