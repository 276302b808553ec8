"""The layout keeps its promises: production code never imports a developer tool.

Every import of every module is read from its source (module level and inside functions),
so a lazy import inside a function counts too. docs/architecture.md states the rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: (packages whose modules are checked, packages they must never import)
RULES = [
    (("pipeline",), ("agents",)),  # the core runs without Kafka and Faust
    (("agents.worker",), ("agents.devtools", "agents.cli")),  # the worker ships alone
    # what scores users never runs the simulator or the offline tools
    (
        ("pipeline.core", "pipeline.models", "pipeline.serde", "pipeline.kpis"),
        ("pipeline.sim", "pipeline.offline"),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (``from x import y`` counts ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


MODULES = {module_name(p): p for d in ("pipeline", "agents") for p in (ROOT / d).rglob("*.py")}


@pytest.mark.parametrize(("checked", "forbidden"), RULES)
def test_no_module_imports_across_a_forbidden_boundary(
    checked: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    crossings = sorted(
        f"{name} imports {imported}"
        for name, path in MODULES.items()
        if within(name, checked)
        for imported in imports_of(path)
        if within(imported, forbidden)
    )
    assert not crossings


def test_the_checker_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from agents.devtools.demo import run\n    import os\n")
    assert imports_of(module) == {"agents.devtools.demo", "agents.devtools.demo.run", "os"}


def test_every_package_is_where_the_architecture_page_says() -> None:
    """Each package of pipeline/ and agents/ is named in docs/architecture.md, and back."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    packages = {
        str(p.parent.relative_to(ROOT)) + "/"
        for d in ("pipeline", "agents")
        for p in (ROOT / d).rglob("__init__.py")
    }
    assert {p for p in packages if f"`{p}`" not in page} == set()
    assert MODULES  # the walk found the code


def test_no_two_test_modules_share_a_name() -> None:
    """Test modules are imported by their file name: two of one name fail collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
