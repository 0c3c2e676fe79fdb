"""report/ sits below the command line: none of its modules imports wganlab.cli, and the
comparison's modules import one another in one direction only (no cycles)."""
from __future__ import annotations

import ast
from pathlib import Path

import wganlab.report as report

REPORT = Path(report.__file__).parent


def _imports(path: Path) -> set[str]:
    """Modules of wganlab that ``path`` imports anywhere (functions included), absolute."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("wganlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = ["wganlab", "report"][:3 - node.level]  # . = report, .. = wganlab
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("wganlab"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_no_report_module_imports_the_cli():
    for path in REPORT.glob("*.py"):
        assert not any(m == "wganlab.cli" or m.startswith("wganlab.cli.")
                       for m in _imports(path)), path.name


def test_report_modules_have_no_import_cycle():
    names = {p.stem for p in REPORT.glob("*.py")} - {"__init__"}
    graph = {n: {m.split(".")[2] for m in _imports(REPORT / f"{n}.py")
                 if m.startswith("wganlab.report.") and m.split(".")[2] in names} - {n}
             for n in names}
    done: set[str] = set()

    def visit(n: str, path: tuple[str, ...]) -> None:
        assert n not in path, " -> ".join(path + (n,))
        if n in done:
            return
        for m in graph[n]:
            visit(m, path + (n,))
        done.add(n)

    for n in sorted(names):
        visit(n, ())
