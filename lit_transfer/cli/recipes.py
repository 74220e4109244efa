"""The recipes shipped with the package: where they are, ``--config`` paths that name them, ``lit-transfer recipes``.

The recipe YAMLs live in the package, ``lit_transfer/recipes/`` (the repository's ``recipes/`` is a link to that
folder, so a checkout without symlinks, Windows' default, still installs them), and a clone, an editable install and
a ``pip install`` find them at the same place through :mod:`importlib.resources`.

Every documented command names them as ``--config recipes/NAME.yaml``. A ``--config`` path that does not exist in the
working folder but names a shipped recipe (``recipes/NAME.yaml`` or ``NAME.yaml``) is read from the package instead,
and one line on stderr says which file was used; a file of the user's at that path always wins, so
``lit-transfer recipes copy NAME`` (which writes ``recipes/NAME.yaml``) followed by the same command runs the copy.
Only the command line is resolved this way: a ``config:`` key inside a YAML file is read relative to that file.

Example:
    >>> sorted(shipped_recipes())[:2]
    ['adam_to_sgd', 'auto']
    >>> shipped_recipe_for("recipes/no_such_recipe.yaml") is None
    True
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path, PurePath

__all__ = [
    "recipe_summary",
    "recipes_command",
    "recipes_dir",
    "resolve_config_args",
    "shipped_recipe_for",
    "shipped_recipes",
]

_FOLDER = "recipes"
_CONFIG_FLAGS = ("--config", "-c")
_USE = "lit-transfer fit --config recipes/defaults.yaml --config recipes/NAME.yaml"


def recipes_dir() -> Path:
    """The folder of the shipped recipe YAMLs (``lit_transfer/recipes`` where the package is installed)."""
    return Path(str(files("lit_transfer").joinpath(_FOLDER)))


def shipped_recipes() -> dict[str, Path]:
    """The shipped recipes by name (the file name without ``.yaml``), sorted by name."""
    return {path.stem: path for path in sorted(recipes_dir().glob("*.yaml"))}


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe, without its leading ``# NAME.yaml —``."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#") and text.lstrip("#").strip():
            text = text.lstrip("#").strip()
            head, dash, rest = text.partition(" — ")
            return rest.strip() if dash and head.endswith(".yaml") else text
    return ""


def shipped_recipe_for(value: str) -> Path | None:
    """The shipped recipe a ``--config`` value names when no such file exists in the working folder.

    Args:
        value: The value given to ``--config``.

    Returns:
        The shipped file for ``recipes/NAME.yaml`` or ``NAME.yaml`` when that path does not exist here and ``NAME`` is
        a shipped recipe; ``None`` otherwise (the value is left to the parser).
    """
    if not value.endswith(".yaml") or Path(value).exists():
        return None
    parts = PurePath(value).parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == _FOLDER):
        return shipped_recipes().get(PurePath(parts[-1]).stem)
    return None


def _say(message: str) -> None:
    print(f"lit-transfer: {message}", file=sys.stderr, flush=True)


def resolve_config_args(argv: Sequence[str], note: Callable[[str], None] = _say) -> list[str]:
    """``argv`` with every ``--config`` value that names a shipped recipe missing here replaced by the shipped file.

    ``--config`` may come before or after the subcommand, as ``--config PATH``, ``-c PATH`` or ``--config=PATH``.

    Args:
        argv: The command-line arguments.
        note: Told one line per replaced value (by default printed to stderr).

    Returns:
        The arguments to parse.
    """
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        flag, value = None, None
        if arg in _CONFIG_FLAGS and i + 1 < len(resolved):
            flag, value = arg, resolved[i + 1]
        elif arg.startswith("--config="):
            flag, value = "--config=", arg.split("=", 1)[1]
        shipped = shipped_recipe_for(value) if value is not None else None
        if shipped is None:
            continue
        note(f"{value} is not in this folder; using the recipe shipped with the package: {shipped}")
        if flag == "--config=":
            resolved[i] = f"--config={shipped}"
        else:
            resolved[i + 1] = str(shipped)
    return resolved


def _list_recipes() -> None:
    recipes = shipped_recipes()
    width = max(len(name) for name in recipes)
    print(f"Recipes shipped with lit-transfer ({recipes_dir()}):")
    for name, path in recipes.items():
        print(f"  {name:<{width}}  {recipe_summary(path)}")
    print(
        f"\nRun one on top of defaults.yaml: `{_USE}` (a file of yours at that path is used instead).\n"
        "Copy one out to edit it: `lit-transfer recipes copy NAME` (writes recipes/NAME.yaml here)."
    )


def _copy_recipe(name: str, dest: str | None, force: bool, parser: argparse.ArgumentParser) -> None:
    recipes = shipped_recipes()
    name = PurePath(name).stem
    if name not in recipes:
        parser.error(f"no shipped recipe is called {name!r}. The recipes: {', '.join(recipes)}.")
    target = Path(dest) if dest is not None else Path(_FOLDER) / f"{name}.yaml"
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists() and not force:
        parser.error(f"{target} exists already: choose another DEST, or pass --force to overwrite it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipes[name], target)
    print(f"Copied the {name} recipe to {target}.")
    if target.resolve() == (Path(_FOLDER) / f"{name}.yaml").resolve():
        print(f"`--config recipes/{name}.yaml` now reads your copy (from this folder).")
    else:
        print(f"Use it with `--config {target}`.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-transfer recipes",
        description=(
            "List the recipes shipped with the package, or copy one into this folder to edit it. A `--config"
            " recipes/NAME.yaml` that does not exist in the working folder reads the shipped recipe."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="{list,copy}")
    actions.add_parser("list", help="list the recipes with their first comment line (the default)")
    copy = actions.add_parser("copy", help="copy a recipe out for editing")
    copy.add_argument("name", metavar="NAME", help="the recipe, e.g. fine_tune (see `lit-transfer recipes`)")
    copy.add_argument("dest", metavar="DEST", nargs="?", help="file or folder to write (default: recipes/NAME.yaml)")
    copy.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    return parser


def recipes_command(argv: Sequence[str]) -> None:
    """``lit-transfer recipes [list]`` and ``lit-transfer recipes copy NAME [DEST] [--force]``.

    Args:
        argv: The arguments after ``recipes``.

    Raises:
        SystemExit: With status 2 and the reason as the last line on a mistake (an unknown recipe, an existing DEST).
    """
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.action == "copy":
        _copy_recipe(args.name, args.dest, args.force, parser)
    else:
        _list_recipes()
