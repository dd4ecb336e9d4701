"""No reach into a dependency's internals: the product's code reads and overrides only public names
of the libraries it uses (issue 15). A library's next release may rename or drop a private name
without notice; these tests fail here first, naming the line, instead of in production."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "workers", "projections")
OURS = (*PACKAGES, "tests", "bench")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def attribute_reaches(tree: ast.AST) -> list[ast.AST]:
    """`x._name` on anything but `self`, `cls` or `super()` (a library's pool, connection, datastore
    or class), and pydantic's `__pydantic_*__` machinery."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (
            (private(node.attr) and ast.unparse(node.value) not in ("self", "cls", "super()"))
            or node.attr.startswith("__pydantic")
        )
    ]


def string_and_import_reaches(tree: ast.AST) -> list[ast.AST]:
    """A private name reached through getattr and friends, or imported from a library."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            found.append(node)
        if isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith(OURS):
            parts = (node.module or "").split(".")
            if any(private(part) for part in parts) or any(private(alias.name) for alias in node.names):
                found.append(node)
    return sorted(found, key=lambda node: getattr(node, "lineno", 0))


def sources() -> Iterator[tuple[Path, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {ast.unparse(node)[:80]}"


def test_no_private_attribute_of_another_object_is_used() -> None:
    assert [where(path, node) for path, tree in sources() for node in attribute_reaches(tree)] == []


def test_no_private_name_is_reached_by_string_or_imported() -> None:
    assert [where(path, node) for path, tree in sources() for node in string_and_import_reaches(tree)] == []


def test_no_class_overrides_a_private_method_of_a_library_class() -> None:
    """A class defines no private method or attribute that one of the library classes it subclasses
    defines (an override of a hook the library may drop or call differently in its next release)."""
    found = []
    for path, tree in sources():
        if path.name == "__main__.py":  # runs the CLI when imported
            continue
        module = importlib.import_module(
            ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        )
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            cls = getattr(module, node.name, None)
            if not inspect.isclass(cls):
                continue  # a class defined inside a function
            foreign = [base for base in cls.__mro__[1:] if not base.__module__.startswith(OURS) and base is not object]
            defined = {
                target.id
                for stmt in node.body
                if isinstance(stmt, ast.Assign | ast.AnnAssign)
                for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
                if isinstance(target, ast.Name)
            }
            defined |= {stmt.name for stmt in node.body if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)}
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}.{name}"
                for name in sorted(defined)
                if private(name) and any(name in vars(base) for base in foreign)
            ]
    assert found == []


def test_the_checks_find_each_kind_of_reach() -> None:
    sample = ast.parse(
        "pool._check = f\nself._own = 1\nm.__pydantic_validator__.validate_json(b)\nm.model_validate_json(b)\n"
        "getattr(es, '_spec', None)\ngetattr(es, 'public')\nfrom psycopg_pool.pool import _x\n"
        "from psycopg_pool._acompat import y\nfrom orchestrator.x import _ours\n"
    )
    assert [ast.unparse(n) for n in attribute_reaches(sample)] == ["pool._check", "m.__pydantic_validator__"]
    assert [ast.unparse(n) for n in string_and_import_reaches(sample)] == [
        "getattr(es, '_spec', None)",
        "from psycopg_pool.pool import _x",
        "from psycopg_pool._acompat import y",
    ]
