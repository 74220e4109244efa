"""The documentation: docstring examples run, and the site builds offline with warnings as errors and is viewed
offline (no page loads a script or a stylesheet from elsewhere; the math renderer ships with the site)."""

from __future__ import annotations

import doctest
import importlib
import json
import logging
import pkgutil
import re
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lit_transfer

ROOT = Path(__file__).resolve().parents[1]

# Public modules whose docstrings must carry runnable examples (others are run when they have some).
WITH_EXAMPLES = {
    "lit_transfer.backbones",
    "lit_transfer.callbacks.layer_freezing",
    "lit_transfer.callbacks.report.run_report",
    "lit_transfer.export",
    "lit_transfer.freezing.policies",
    "lit_transfer.freezing.resolve",
    "lit_transfer.tasks",
    "lit_transfer.freezing.layer_groups",
    "lit_transfer.models.classifier",
    "lit_transfer.optim.param_groups",
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


_BUILT: dict[str, Path] = {}


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built site: `mkdocs build --strict` in-process, once per session, by the first test that asks for it.

    A function-scoped fixture on purpose: the build runs under the test suite's network guard (autouse), so it fetches
    nothing.
    """
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    if "site" not in _BUILT:
        from mkdocs.commands.build import build
        from mkdocs.config import load_config

        monkeypatch.chdir(ROOT)  # snippet paths (recipes/*.yaml) are relative to the repository root
        logging.getLogger("mkdocs").setLevel(logging.INFO)
        built = tmp_path_factory.mktemp("docs") / "site"
        build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(built), strict=True))
        _BUILT["site"] = built
    return _BUILT["site"]


def test_site_builds_strict_and_offline(site: Path) -> None:
    """`mkdocs build --strict` in-process, under the test suite's network guard: the build fetches nothing."""
    for page in ("index.html", "run-report/index.html", "export/index.html", "api/callbacks/index.html"):
        assert (site / page).is_file(), page
    # one page per recipe, showing the real file
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        html = (site / "recipes" / recipe.stem / "index.html").read_text(encoding="utf-8")
        first_key = next(line for line in recipe.read_text().splitlines() if line and not line.startswith("#"))
        assert first_key.split(":")[0] in html, recipe.name
    api = (site / "api" / "freezing" / "index.html").read_text(encoding="utf-8")
    assert "Example:" not in api and "[1, 1, 6, 6]" in api  # examples render as code, not as text


REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)  # http://, https://, //host (protocol-relative)
LOADED_LINKS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "apple-touch-icon", "manifest"}
CSS_REMOTE = re.compile(r"""(?:url\(|@import)\s*['"]?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE)


class _Assets(HTMLParser):
    """What a page makes the browser load: script sources, linked stylesheets/icons, any other `src`."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[tuple[str, str]] = []  # (tag, address)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "src" in values:
            self.loaded.append((tag, values["src"]))
        if tag == "link":
            rel = set(values.get("rel", "").lower().split())
            href = values.get("href", "")
            if rel & LOADED_LINKS or href.split("?")[0].endswith((".css", ".js")):
                self.loaded.append((f"link rel={values.get('rel')}", href))


def _pages(site: Path) -> list[Path]:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    return pages


def test_site_loads_nothing_from_the_network(site: Path) -> None:
    """Viewed offline, every page is complete: no script, stylesheet, icon or image comes from another host."""
    remote = []
    for page in _pages(site):
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        remote += [f"{page.relative_to(site)}: <{tag}> {url}" for tag, url in parser.loaded if REMOTE.search(url)]
    for stylesheet in sorted(site.rglob("*.css")):
        remote += [
            f"{stylesheet.relative_to(site)}: {m.group(0)}"
            for m in CSS_REMOTE.finditer(stylesheet.read_text(encoding="utf-8"))
        ]
    assert not remote, "remote assets:\n" + "\n".join(remote)


def test_site_bundles_the_math_renderer(site: Path) -> None:
    """Math is rendered by the KaTeX copy in docs/vendor/katex/, with every font its stylesheet names."""
    katex = site / "vendor" / "katex"
    for name in ("katex.min.js", "katex.min.css", "LICENSE"):
        assert (katex / name).is_file(), name
    assert "MIT License" in (katex / "LICENSE").read_text()
    fonts = re.findall(r"url\(([^)]+)\)", (katex / "katex.min.css").read_text())
    assert fonts, "the KaTeX stylesheet names no fonts"
    for font in fonts:
        assert (katex / font.strip("'\"")).is_file(), font
    assert not (site / "vendor" / "katex" / "README.md").exists()  # the provenance note is not a page
    with_math = [p for p in _pages(site) if 'class="arithmatex"' in p.read_text(encoding="utf-8")]
    assert {"concepts/lr-scaling/index.html", "api/callbacks/index.html"} <= {
        p.relative_to(site).as_posix() for p in with_math
    }
    for page in with_math:
        html = page.read_text(encoding="utf-8")
        for asset in ("vendor/katex/katex.min.js", "vendor/katex/katex.min.css", "javascripts/katex.js"):
            assert asset in html, f"{page.relative_to(site)} does not load {asset}"


_KATEX_CHECK = """
const fs = require("fs");
const katex = require(process.argv[1]);
const failures = [];
for (const [where, tex, display] of JSON.parse(fs.readFileSync(0, "utf8"))) {
  try { katex.renderToString(tex, { displayMode: display, throwOnError: true, strict: "error" }); }
  catch (error) { failures.push(`${where}: ${error.message}`); }
}
console.log(JSON.stringify(failures));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run KaTeX")
def test_site_math_renders_with_katex(site: Path) -> None:
    """Every formula on the site (pages and docstrings) is TeX that the bundled KaTeX renders without an error."""
    import html as html_lib

    formulas = []
    for page in _pages(site):
        text = page.read_text(encoding="utf-8")
        for tag, body in re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', text, re.DOTALL):
            tex = html_lib.unescape(body).strip()
            assert tex[:2] in ("\\(", "\\["), (page, tex)
            formulas.append([str(page.relative_to(site)), tex[2:-2], tag == "div"])
    assert len(formulas) > 20
    script = site / "vendor" / "katex" / "katex.min.js"
    result = subprocess.run(
        ["node", "-e", _KATEX_CHECK, str(script)],
        input=json.dumps(formulas),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    failures = json.loads(result.stdout)
    assert not failures, "\n".join(failures)


def test_example_images_are_small() -> None:
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert {p.name for p in images} >= {"learning_curves.png", "schedule.png", "confusion_matrix.png"}
    for image in images:
        assert image.stat().st_size < 200_000, image.name


def test_no_measured_figure_is_typed_into_recipes_readme_or_docstrings() -> None:
    """Measured accuracies live in the files the benchmarks generate (docs/benchmarks/), never typed by hand."""
    typed = re.compile(r"\d+\.\d+ ?%")
    sources = [ROOT / "README.md", *sorted((ROOT / "lit_transfer" / "recipes").glob("*.yaml"))]
    sources += sorted((ROOT / "lit_transfer").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    offenders = []
    for path in sources:
        previous = ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            doctest_output = previous.startswith(">>>")  # computed by the example above it, and checked
            is_text = path.suffix != ".py" or stripped.startswith("#") or not re.search(r"[{}()=]", stripped)
            if is_text and not doctest_output and typed.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
            previous = stripped
    assert not offenders, "\n".join(offenders)
