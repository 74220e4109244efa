"""Where a setting came from: a flag on the command line or a key in one of the ``--config`` files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["command_line_value", "where_set", "without_options"]


def command_line_value(argv: Sequence[str], group: str, key: str) -> tuple[str, str | None] | None:
    """The flag ``--<group>.<key>`` (or ``--<group>.init_args.<key>``) given in ``argv`` and its value, if any.

    A flag given more than once takes its last value, as the parser does (a script's defaults, then the user's).

    Returns:
        ``(flag, value)`` for the last such flag (``value`` is ``None`` when nothing follows it), else ``None``.
    """
    flags = (f"--{group}.{key}", f"--{group}.init_args.{key}")
    found: tuple[str, str | None] | None = None
    for i, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name in flags:
            found = (name, value) if equals else (name, argv[i + 1] if i + 1 < len(argv) else None)
    return found


def where_set(config_files: Iterable[Any], argv: list[str], key: str) -> str | None:
    """Describe where ``model.<key>`` was written: the config file and key, or the command-line flag."""
    given = command_line_value(argv, "model", key)
    if given is not None:
        return f"command line `{given[0]}`"
    for path in reversed(list(config_files or [])):
        try:
            content = yaml.safe_load(Path(str(path)).read_text())
        except (OSError, yaml.YAMLError):
            continue
        model = content.get("model") if isinstance(content, dict) else None
        if not isinstance(model, dict):
            continue
        if key in model:
            return f"{path}: `model.{key}`"
        if isinstance(model.get("init_args"), dict) and key in model["init_args"]:
            return f"{path}: `model.init_args.{key}`"
    return None


def without_options(argv: Iterable[str], names: Iterable[str]) -> list[str]:
    """``argv`` without the options ``--<name> value`` and ``--<name>=value`` of every name in ``names``.

    Example:
        >>> without_options(["fit", "--ckpt_path", "last", "--n_trials=3", "--x", "1"], ["ckpt_path", "n_trials"])
        ['fit', '--x', '1']
    """
    dropped = set(names)
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token[2:].split("=", 1)[0] if token.startswith("--") else None
        if name in dropped:
            skip = "=" not in token
            continue
        kept.append(token)
    return kept
