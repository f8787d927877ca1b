"""The package's shape, checked by tools rather than by review: import-linter's contracts
(pyproject.toml: napari on top, core at the bottom, no cycles, napari and Qt only in the
napari modules), no private name imported or reached across modules, and the layout
``ruff format`` gives."""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_dsp"


def test_import_contracts_hold():
    cli = pytest.importorskip("importlinter.cli", reason="needs import-linter (testing)")
    assert (
        cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
        == 0
    )


def _private_names_crossing(path: Path) -> list[str]:
    """``from .x import _name`` and ``module._name`` of another module of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("napari_dsp")
        ):
            for alias in node.names:
                name = alias.name
                private = name.startswith("_") and not name.startswith("__")
                if private and not _is_module(path, node, name):
                    found.append(f"from {'.' * node.level}{node.module or ''} import {name}")
                modules.add(alias.asname or name)
        elif isinstance(node, ast.Import):
            modules.update(
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.startswith("napari_dsp")
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


def _is_module(path: Path, node: ast.ImportFrom, name: str) -> bool:
    """``from . import _synthetic``: a private module of the same package, not a name."""
    base = path.parent
    for _ in range(max(node.level - 1, 0)):
        base = base.parent
    if node.module:
        base = base.joinpath(*node.module.split("."))
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


def test_no_private_name_crosses_a_module():
    crossing = {
        str(p.relative_to(PACKAGE)): names
        for p in sorted(PACKAGE.rglob("*.py"))
        if (names := _private_names_crossing(p))
    }
    assert crossing == {}


def test_ruff_format_owns_the_layout():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("needs ruff (testing)")
    done = subprocess.run(
        [ruff, "format", "--check", "src", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
