"""The package's metadata: every third-party module it imports is declared, and every declared dependency is used.

The wheel and sdist themselves (the recipes, LICENSE, the tests an sdist runs) are checked by building and
installing them: ``.ci/installed.sh``, run by ``tests/e2e/test_installed.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import lit_transfer

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(lit_transfer.__file__).parent
USED_WITHOUT_IMPORT = {
    "tensorboard": "Lightning's TensorBoardLogger, one of the CLI's default loggers (lit_transfer.cli.run_files)",
}
"""Declared dependencies the package needs without importing them itself, and why."""


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imported_distributions() -> dict[str, set[str]]:
    """Distribution name -> the package modules that import one of its top-level modules."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("lit_transfer", "__future__"):
                    continue
                for dist in owners.get(top, [top]):
                    found.setdefault(_name(dist), set()).add(str(path.relative_to(PACKAGE.parent)))
    return found


def test_every_imported_module_is_declared_and_every_dependency_used() -> None:
    project = _project()
    runtime = {_name(r) for r in project["dependencies"]}
    export = {_name(r) for r in project["optional-dependencies"]["export"]}
    imported = _imported_distributions()
    undeclared = {dist: where for dist, where in imported.items() if dist not in runtime | export}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = runtime - set(imported) - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml but never imported by lit_transfer: {sorted(unused)}"
    assert export <= set(imported), "the export extra holds what lit_transfer.export imports"
    assert set(USED_WITHOUT_IMPORT) <= runtime


def test_license_and_one_version_source() -> None:
    project = _project()
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "lit_transfer contributors" in text
    assert "version" not in project.get("dynamic", []) and lit_transfer.__version__ == project["version"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # the SPDX string says it


def test_the_recipes_are_real_files_inside_the_package() -> None:
    """A checkout without symlinks (Windows' default) must still install every recipe: the package holds the files."""
    folder = ROOT / "lit_transfer" / "recipes"
    assert folder.is_dir() and not folder.is_symlink()
    recipes = sorted(folder.glob("*.yaml"))
    assert recipes and not any(path.is_symlink() for path in recipes)
    assert sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")) == [p.name for p in recipes]
