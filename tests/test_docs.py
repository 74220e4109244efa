"""The documentation: docstring examples run, and the site builds offline with warnings as errors."""

from __future__ import annotations

import doctest
import importlib
import logging
import pkgutil
import warnings
from pathlib import Path

import pytest

import lit_transfer

ROOT = Path(__file__).resolve().parents[1]

# Public modules whose docstrings must carry runnable examples (others are run when they have some).
WITH_EXAMPLES = {
    "lit_transfer.backbones",
    "lit_transfer.callbacks.layer_freezing",
    "lit_transfer.callbacks.run_report",
    "lit_transfer.export",
    "lit_transfer.freezing",
    "lit_transfer.layer_groups",
    "lit_transfer.models.classifier",
    "lit_transfer.optim",
    "lit_transfer.plots",
}
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(lit_transfer.__path__, "lit_transfer.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (output above)"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} lost its docstring examples"


def test_public_modules_exist() -> None:
    assert set(MODULES) >= WITH_EXAMPLES


def test_site_builds_strict_and_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mkdocs build --strict` in-process, under the test suite's network guard: the build fetches nothing."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    monkeypatch.chdir(ROOT)  # snippet paths (recipes/*.yaml) are relative to the repository root
    logging.getLogger("mkdocs").setLevel(logging.INFO)
    site = tmp_path / "site"
    build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True))
    for page in ("index.html", "run-report/index.html", "export/index.html", "api/callbacks/index.html"):
        assert (site / page).is_file(), page
    # one page per recipe, showing the real file
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        html = (site / "recipes" / recipe.stem / "index.html").read_text(encoding="utf-8")
        first_key = next(line for line in recipe.read_text().splitlines() if line and not line.startswith("#"))
        assert first_key.split(":")[0] in html, recipe.name
    api = (site / "api" / "freezing" / "index.html").read_text(encoding="utf-8")
    assert "Example:" not in api and "[1, 1, 6, 6]" in api  # examples render as code, not as text


def test_example_images_are_small() -> None:
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert {p.name for p in images} >= {"learning_curves.png", "schedule.png", "confusion_matrix.png"}
    for image in images:
        assert image.stat().st_size < 200_000, image.name
