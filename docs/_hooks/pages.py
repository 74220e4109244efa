"""MkDocs hooks: pages generated from the repository at build time, so the docs describe what exists.

Recipes: one page per ``recipes/*.yaml``.

Each page shows the first line of the recipe's header comment as its summary, the command that runs it, and the file
itself through ``pymdownx.snippets`` (so the page always shows the real file, comments included).
``recipes/index.md`` lists them all; the navigation's ``Recipes`` entry is expanded to the index plus one entry per
recipe.

Module map: ``<!-- module-map -->`` in a page is replaced by a table of the package's modules and the first line of
each module docstring (read with ``ast``, nothing is imported).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
PACKAGE = ROOT / "lit_transfer"
MODULE_MAP = "<!-- module-map -->"


def _recipes() -> list[Path]:
    files = sorted(RECIPES.glob("*.yaml"))
    return sorted(files, key=lambda p: (p.stem != "defaults", p.stem))


def _header(path: Path) -> list[str]:
    """The leading comment block, without the ``# `` markers and the first ``# name.yaml — `` title prefix."""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" "))
    if lines and lines[0].startswith(path.name):
        lines[0] = lines[0][len(path.name) :].lstrip(" —-:")
    if lines and lines[0]:
        lines[0] = lines[0][0].upper() + lines[0][1:]
    return lines


def _title(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


def _command(path: Path) -> str:
    if path.stem == "defaults":
        return "lit-transfer fit --config recipes/defaults.yaml"
    return f"lit-transfer fit --config recipes/defaults.yaml --config recipes/{path.name}"


def _page(path: Path) -> str:
    header = _header(path)
    summary = header[0] if header else ""
    parts = [f"# {_title(path)}", "", summary, "", "```bash", _command(path), "```", ""]
    parts += [f"## `recipes/{path.name}`", "", "```yaml", f'--8<-- "recipes/{path.name}"', "```", ""]
    return "\n".join(parts)


def _index(paths: list[Path]) -> str:
    lines = [
        "# Recipes",
        "",
        "A recipe is a small YAML overlay on `recipes/defaults.yaml`: it changes only what the experiment is about."
        " Config files compose left to right, and anything can still be overridden on the command line:",
        "",
        "```bash",
        "lit-transfer fit --config recipes/defaults.yaml --config recipes/<recipe>.yaml --trainer.max_epochs 20",
        "lit-transfer fit --config recipes/defaults.yaml --config recipes/<recipe>.yaml --print_config  # resolved",
        "```",
        "",
        "| Recipe | What it does |",
        "|---|---|",
    ]
    for path in paths:
        header = _header(path)
        summary = (header[0] if header else "").replace("|", "\\|")
        lines.append(f"| [{path.stem}]({path.stem}.md) | {summary} |")
    if not paths:
        lines.append("| (none yet) | |")
    return "\n".join(lines) + "\n"


def on_config(config: Any) -> Any:
    """Expand the ``Recipes`` navigation entry into the index and one page per recipe."""
    entries: list[Any] = [{"Overview": "recipes/index.md"}]
    entries += [{_title(p): f"recipes/{p.stem}.md"} for p in _recipes()]
    nav = config.get("nav") or []
    for index, item in enumerate(nav):
        if isinstance(item, dict) and "Recipes" in item:
            nav[index] = {"Recipes": entries}
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages."""
    paths = _recipes()
    files.append(File.generated(config, "recipes/index.md", content=_index(paths)))
    for path in paths:
        files.append(File.generated(config, f"recipes/{path.stem}.md", content=_page(path)))
    return files


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):`(~?)([^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _plain(line: str) -> str:
    """A docstring line as Markdown: Sphinx roles as code (``:class:`~a.B``` -> `B`), double backticks single."""
    return _ROLE.sub(_role_as_code, line).replace("``", "`").replace("|", chr(92) + "|")


def _module_map() -> str:
    """One table per package folder (the top level, then each subpackage): module name and the docstring's first line."""
    sections: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        private = path.name.startswith("_") and path.name not in ("__init__.py", "__main__.py")
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        shown = "(the package)" if path.name == "__init__.py" else f"`{path.stem}`" + (" (private)" if private else "")
        sections.setdefault(package, []).append(f"| {shown} | {_plain(first)} |")
    parts = []
    for package, rows in sections.items():
        parts += [f"**`{package}`**", "", "| Module | What it holds |", "|---|---|", *rows, ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Fill the module map."""
    if MODULE_MAP in markdown:
        markdown = markdown.replace(MODULE_MAP, _module_map())
    return markdown
