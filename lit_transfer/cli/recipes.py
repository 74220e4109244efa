"""The recipes shipped with the package: where they are, ``--config`` paths that name them, ``lit-transfer recipes``.

The recipe YAMLs live in the package, ``lit_transfer/recipes/`` (the repository's ``recipes/`` is a link to that
folder, so a checkout without symlinks, Windows' default, still installs them), and a clone, an editable install and
a ``pip install`` find them at the same place through :mod:`importlib.resources`.

Every documented command names them as ``--config recipes/NAME.yaml``. A ``--config`` path that does not exist in the
working folder but names a shipped recipe (``recipes/NAME.yaml``, ``NAME.yaml`` or ``NAME``) is read from the
package instead, and one line on stderr says which file was used; a file of the user's at that path always wins, so
``lit-transfer recipes copy NAME`` (which writes ``recipes/NAME.yaml``) followed by the same command runs the copy. A
name that neither this folder nor the package has is refused before anything else runs, with the closest shipped
name. ``lit-transfer tune``'s ``--space recipes/tune_space.yaml`` is resolved the same way. Only the command line is
resolved this way: a ``config:`` key inside a YAML file is read relative to that file.

Example:
    >>> sorted(shipped_recipes())[:2]
    ['adam_to_sgd', 'auto']
    >>> shipped_recipe_for("recipes/no_such_recipe.yaml") is None
    True
"""

from __future__ import annotations

import argparse
import difflib
import re
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
_NAME = re.compile(r"[A-Za-z0-9_-]+")
"""What a recipe's name is made of (the file name without ``.yaml``)."""
_RECIPE_FLAGS = ("--config", "-c", "--space")
"""The options whose value may name a shipped recipe (``--space``: ``lit-transfer tune``'s search space)."""
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
        The shipped file for ``recipes/NAME.yaml``, ``NAME.yaml`` or ``NAME`` when that path does not exist here and
        ``NAME`` is a shipped recipe; ``None`` otherwise.
    """
    name = _recipe_name(value)
    return None if name is None else shipped_recipes().get(name)


def _recipe_name(value: str) -> str | None:
    """``NAME`` for a ``--config`` value ``recipes/NAME.yaml``, ``NAME.yaml`` or ``NAME`` missing from this folder.

    ``NAME`` is letters, digits, ``_`` and ``-``; any other value (a path elsewhere, a file that exists, a YAML
    string given inline) gives ``None``.

    Example:
        >>> _recipe_name("recipes/no_such_recipe.yaml"), _recipe_name("tune_space"), _recipe_name("{trainer: {}}")
        ('no_such_recipe', 'tune_space', None)
    """
    if not _NAME.fullmatch(PurePath(value).stem) or Path(value).exists():
        return None
    path = PurePath(value)
    in_folder = len(path.parts) == 2 and path.parts[0] == _FOLDER and path.suffix == ".yaml"
    alone = len(path.parts) == 1 and path.suffix in (".yaml", "")
    return path.stem if in_folder or alone else None


def _unknown_recipe_message(flag: str, value: str, name: str) -> str:
    """The error for a ``flag`` value naming the recipe ``name`` that neither this folder nor the package has.

    Example:
        >>> "Did you mean `recipes/fine_tune.yaml`?" in _unknown_recipe_message("--config", "x", "fine_tuning")
        True
    """
    close = difflib.get_close_matches(name, sorted(shipped_recipes()), n=1)
    hint = f" Did you mean `{_FOLDER}/{close[0]}.yaml`?" if close else ""
    return (
        f"`{flag} {value}`: no such file in this folder, and no recipe of that name ships with the package.{hint}"
        " `lit-transfer recipes` lists the shipped recipes."
    )


def _say(message: str) -> None:
    print(f"lit-transfer: {message}", file=sys.stderr, flush=True)


def resolve_config_args(argv: Sequence[str], note: Callable[[str], None] = _say) -> list[str]:
    """``argv`` with each ``--config`` or ``--space`` value naming a shipped recipe missing here replaced by the file.

    ``--config`` may come before or after the subcommand, as ``--config PATH``, ``-c PATH`` or ``--config=PATH``;
    ``tune``'s ``--space PATH`` or ``--space=PATH`` likewise. A recipe is named as ``recipes/NAME.yaml``, ``NAME.yaml``
    or ``NAME``.

    Args:
        argv: The command-line arguments.
        note: Told one line per replaced value (by default printed to stderr).

    Returns:
        The arguments to parse.

    Raises:
        ValueError: For a value that names a recipe (as above) that neither this folder nor the package has, with
            the closest shipped name.
    """
    resolved = list(argv)
    recipes = shipped_recipes()
    for i, arg in enumerate(resolved):
        flag, value, inline = None, None, False
        if arg in _RECIPE_FLAGS and i + 1 < len(resolved):
            flag, value = arg, resolved[i + 1]
        elif arg.split("=", 1)[0] in _RECIPE_FLAGS and "=" in arg:
            (flag, value), inline = arg.split("=", 1), True
        if flag is None or value is None:
            continue
        name = _recipe_name(value)
        if name is None:
            continue
        shipped = recipes.get(name)
        if shipped is None:
            raise ValueError(_unknown_recipe_message(flag, value, name))
        note(f"{value} is not in this folder; using the recipe shipped with the package: {shipped}")
        if inline:
            resolved[i] = f"{flag}={shipped}"
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
