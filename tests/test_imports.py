"""prorl's packages import one another in layers: no module imports, directly or through
others, a module that imports it back. Import circles make import order matter, force
function-level imports and tangle storage, scale-out and training code (docs/architecture.md).

Every import counts: module-level, function-level and ``TYPE_CHECKING`` ones alike.
``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "prorl").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the prorl modules it imports."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package, up level - 1
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                subs = [f"{source}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in mods] or [source]
            else:
                continue
            graph[mod] |= {t for t in targets if t in mods and t != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_known_imports() -> None:
    graph = import_graph()
    assert "prorl.config" in graph["prorl.train"]
    assert "prorl.types" in graph["prorl.tasks.base"]
    assert len(graph) > 50


def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles in src/prorl:\n" + "\n".join(" <-> ".join(c) for c in found)


# (package, packages it must not import): the layers of docs/architecture.md
FORBIDDEN = {
    "verify": {"tasks", "scoring", "models", "policy", "sampling", "scale", "train", "runtime"},
    "rl": {
        "models",
        "policy",
        "sampling",
        "scoring",
        "tasks",
        "verify",
        "scale",
        "state",
        "train",
        "update",
        "rollouts",
        "collect",
        "producer",
        "ahead",
        "runtime",
        "checkpoint",
    },
    "checkpoint": {"state", "train", "scale", "models", "runtime", "sampling"},
    "tasks": {"scoring", "sampling", "models", "scale", "train", "runtime"},
    "scale": {
        "state",
        "train",
        "update",
        "rollouts",
        "collect",
        "producer",
        "ahead",
        "runtime",
        "cli",
        "evaluate",
        "study",
    },
    # evaluation is built from engines and tasks, never from a training run's wiring
    "evaluate": {"runtime", "train", "state", "update", "ahead", "producer", "study"},
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_layers_hold() -> None:
    graph = import_graph()
    broken = sorted(
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if _package(b) in FORBIDDEN.get(_package(a), set())
        or _package(b) == "cli"
        and _package(a) != "cli"
    )
    assert not broken, "layer rules (docs/architecture.md) broken:\n" + "\n".join(broken)
