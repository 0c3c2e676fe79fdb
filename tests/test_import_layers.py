"""wganlab's modules import each other without a cycle: every import statement of the package
(module level or inside a function) is an edge, and the graph must be acyclic, so each module
can be read, tested and replaced on top of the ones it uses."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wganlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (
        PACKAGE.parent / rel / "__init__.py").is_file()


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the wganlab modules its import statements name."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path)
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(here[:len(here) - node.level + 1]) if node.level
                        else "") + ("." if node.level and node.module else "") + (node.module or "")
                base = base.strip(".")
                targets = [f"{base}.{a.name}" if _exists(f"{base}.{a.name}") else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and not _exists(t):
                    t = t.rpartition(".")[0]
                if t.startswith("wganlab") and t != name:
                    edges.add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_relative_and_lazy_imports():
    g = import_graph()
    assert "wganlab.config" in g["wganlab.constraints.registry"]
    assert "wganlab.plugins" in g["wganlab.config"]


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


#: the README's layer diagram, bottom up: a module imports only modules of lower floors (and of
#: its own package)
FLOORS = [("errors", "atomic", "plotting"), ("plugins", "schema"), ("constraint_config",),
          ("config",), ("data", "models"), ("metrics", "rescale"), ("constraints",), ("train",),
          ("report",), ("cli", "wganlab"), ("__main__",)]


def test_floors_import_only_downward():
    floor = {name: i for i, names in enumerate(FLOORS) for name in names}

    def part(module: str) -> str:
        p = module.split(".")
        return p[1] if len(p) > 1 else "wganlab"

    bad = [f"{a} -> {b}" for a, bs in import_graph().items() for b in bs
           if part(a) != part(b) and floor[part(b)] >= floor[part(a)]]
    assert not bad, "imports that go up or sideways: " + "; ".join(sorted(bad))
    packages = {p.stem if p.suffix else p.name for p in PACKAGE.iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert packages - {"__init__"} <= set(floor), "a module missing from FLOORS"
