"""The layering of llmaas, checked by reading the source (ast; nothing is imported or run).

Data flows one way: `api`, `batches` (its runner replays API calls) and `cli` (the top, wired together by `services.py`)
sit on `training` and `tenancy`, which sit on `store` and `engine`. A lower layer never imports an upper one: a change to the HTTP layer can then never break
the engine, the tenancy rules or the tables. Every import counts, also the ones inside functions and under
`TYPE_CHECKING`: a deferred import is still a dependency.

A new exception goes in `ALLOWED` with the reason it is one; an entry that no longer matches an import fails too,
so the list only ever shrinks.

One rule for persistence: `store/` holds every table and every query, one module per domain. Outside it, SQLAlchemy
is imported only for the `Session` type (`sqlalchemy.orm`), and no table is declared.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmaas"

# layer (the first package below llmaas) -> the layers and top-level modules it must never import
# (`services` builds every part and `server` runs them: only the CLI may import those two)
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"api", "batches", "tenancy", "training", "store", "console", "cli", "server", "services"},
    "store": {"api", "batches", "tenancy", "training", "engine", "console", "cli", "server", "services"},
    "tenancy": {"api", "batches", "console", "cli", "server", "services"},
    "training": {"api", "batches", "console", "cli", "server", "services"},
    "api": {"cli", "server", "services"},
    "batches": {"cli", "server", "services"},
    "console": {"cli", "server", "services"},
}
# third-party packages a layer must never import (STYLE.md: nothing in engine/ imports FastAPI; nothing in api/ imports
# torch), and the package as a whole never imports pytest (its test helpers live in tests/support/)
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "engine": {"fastapi", "starlette"},
    "store": {"fastapi", "starlette", "torch"},
    "tenancy": {"fastapi", "starlette", "torch"},
    "api": {"torch"},
    "console": {"torch"},
    "*": {"pytest", "_pytest"},
}
# (importing module, imported module) -> why it is allowed. Empty: no exceptions today.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` (the text of `module`) imports, absolute; `from llmaas import api` counts as `llmaas.api`."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=module)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            if parent == "llmaas":  # `from llmaas import api`: the layer is the name imported
                found.update(f"llmaas.{alias.name}" for alias in node.names)
            else:
                found.add(parent)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "llmaas" and len(parts) > 1 else None


def violations() -> list[tuple[str, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        layer = _layer(module)
        source = path.read_text(encoding="utf-8")
        for imported in sorted(_imports(source, module, is_package=path.name == "__init__.py")):
            target = _layer(imported)
            top = imported.split(".")[0]
            if (
                layer in FORBIDDEN
                and target in FORBIDDEN[layer]
                or top in FORBIDDEN_THIRD_PARTY.get(layer or "", set()) | FORBIDDEN_THIRD_PARTY["*"]
            ):
                out.append((module, imported))
    return out


def test_no_lower_layer_imports_an_upper_one() -> None:
    found = [v for v in violations() if v not in ALLOWED]
    assert not found, "lower layer imports an upper one (or a forbidden package):\n" + "\n".join(
        f"  {module} imports {imported}" for module, imported in found
    )


def test_every_allowed_exception_is_still_needed() -> None:
    stale = set(ALLOWED) - set(violations())
    assert not stale, f"ALLOWED lists imports that no longer exist (remove them): {sorted(stale)}"


def persistence_outside_store() -> list[str]:
    """Modules outside `store/` that build SQL (import sqlalchemy beyond `sqlalchemy.orm`) or declare a table."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _layer(module) == "store":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=module)
        sql = sorted(
            imported
            for imported in _imports(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py")
            if imported.split(".")[0] == "sqlalchemy" and imported != "sqlalchemy.orm"
        )
        out += [f"{module} imports {imported}" for imported in sql]
        out += [
            f"{module} declares table {node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id in ("Base", "DeclarativeBase") for b in node.bases)
        ]
    return out


def test_every_table_and_query_lives_in_store() -> None:
    found = persistence_outside_store()
    assert not found, "persistence outside llmaas/store (move the table or query there):\n" + "\n".join(
        f"  {line}" for line in found
    )


def test_the_checker_sees_every_import_form() -> None:
    """Guards the guard: absolute, `from llmaas import x`, relative and deferred imports are all found."""
    source = (
        "import llmaas.api.app\n"
        "from llmaas import tenancy\n"
        "from ..store import db\n"
        "def f():\n"
        "    from .core import EngineCore\n"
    )
    found = _imports(source, "llmaas.engine.probe")
    assert {"llmaas.api.app", "llmaas.tenancy", "llmaas.store", "llmaas.engine.core"} <= found
