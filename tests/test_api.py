"""The public surface: one export list, light `import analysis_lib`, imports one way, no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import analysis_lib
from tests.fresh import run_python

PACKAGE = Path(analysis_lib.__file__).resolve().parent


def test_all_is_the_export_table_and_every_name_resolves():
    assert analysis_lib.__all__ == sorted(analysis_lib._EXPORTS)
    for name in analysis_lib.__all__:
        assert getattr(analysis_lib, name) is not None, name


def test_type_checking_imports_match_the_export_table():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    ]
    imported = {
        alias.name: "." * node.level + (node.module or "")
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == analysis_lib._EXPORTS


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        analysis_lib.no_such_name  # noqa: B018


def test_import_does_not_load_heavy_modules():
    heavy = ["django", "pandas", "matplotlib", "IPython", "memory_profiler", "geopandas", "dask"]
    code = (
        "import sys, analysis_lib\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    assert run_python(code).stdout.strip() == ""


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (packages as their __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            targets = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            continue  # the lazy exports of __init__: resolved on attribute access only
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def test_no_import_cycle_inside_analysis_lib():
    modules = _modules()
    # The package root re-exports names under TYPE_CHECKING only; nothing may import it back.
    graph = {
        name: _imports(name, path, modules) - {"analysis_lib"} for name, path in modules.items()
    }
    importers_of_root = [
        name for name, path in modules.items() if "analysis_lib" in _imports(name, path, modules)
    ]
    assert importers_of_root == [], "modules importing the package root (a cycle through it)"
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str) -> None:
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        stack.append(name)
        for target in sorted(graph[name]):
            if target != "analysis_lib":
                visit(target)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        if name != "analysis_lib":
            visit(name)
    assert "analysis_lib.regions.core" in graph  # the walk saw the subpackages


_NO_PROJECT_SETTINGS = """
SECRET_KEY = "x"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.gis", "analysis_lib"]
DATABASES = {"default": {"ENGINE": "django.contrib.gis.db.backends.spatialite",
                         "NAME": ":memory:"}}
USE_TZ = True
"""

_IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import analysis_lib
names = [m.name for m in pkgutil.walk_packages(analysis_lib.__path__, "analysis_lib.")]
import django
django.setup()
for name in names:
    importlib.import_module(name)
for name in analysis_lib.__all__:
    getattr(analysis_lib, name)
from django.contrib.gis.db.models import GeometryField
assert "within_indexed" in GeometryField.get_lookups(), "the app did not register its lookups"
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in ("project", "tests")))
"""


def test_analysis_lib_never_imports_the_project(tmp_path):
    (tmp_path / "plain_settings.py").write_text(_NO_PROJECT_SETTINGS)
    done = run_python(
        _IMPORT_EVERYTHING,
        cwd=tmp_path,  # not the checkout: `project` is not importable from here
        settings="plain_settings",
        env={"PYTHONPATH": str(tmp_path)},
    )
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 15
    assert loaded.strip() == "[]"
