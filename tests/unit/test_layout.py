"""The layout: packages depend on each other in one direction only (no import cycles between them),
and the domain stands alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("orchestrator", "workers", "projections")


def unit(module: str) -> str:
    """The package a module belongs to: a subpackage of orchestrator (or one of its top-level
    modules), or workers or projections as a whole."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "orchestrator" and len(parts) > 1 else parts[0]


def modules() -> Iterator[tuple[str, Path]]:
    for top in TOP:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imported(module: str, path: Path) -> Iterator[str]:
    """Every module `module` imports, wherever the import is (a function's too), except under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base  # the package itself, unless every name is a module of it (below)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    known = dict(modules())
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set(imported(module, path))
        # `from orchestrator import safefs` imports the module, not the package's face
        faces = {t.rpartition(".")[0] for t in targets if t in known and t.rpartition(".")[0] in known}
        for target in targets - faces:
            if target in known and unit(target) != unit(module):
                edges.setdefault(unit(module), set()).add(unit(target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_packages() -> None:
    edges = graph()
    assert edges, "no imports found: the test reads the wrong tree"
    assert cycles(edges) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_domain_stands_alone() -> None:
    """Importing the domain loads no queue, no database driver, no worker or read-model code."""
    code = (
        "import sys, orchestrator.domain; "
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in "
        "('rq', 'redis', 'psycopg', 'psycopg_pool', 'fakeredis', 'workers', 'projections', 'typer', 'rich') "
        "or m.startswith(('orchestrator.entry', 'orchestrator.runtime', 'orchestrator.write', "
        "'orchestrator.dispatch', 'orchestrator.audit', 'orchestrator.fabric'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == []
