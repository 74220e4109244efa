"""Every unknown key of every ``--config`` file, each with the file it is in and the nearest known name.

jsonargparse stops at the first unknown key and does not say which of several ``--config`` files holds it. When
parsing fails, :func:`check_config_keys` reads the files the command named and raises one message listing each
unknown key under its file (``bad.yaml, the 3rd --config``), with a suggestion: a close name, or for a learning rate
or weight decay given to the model the optimizer's key that takes it. It only speaks when it finds something;
otherwise the parser's own message stands.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["check_config_keys", "config_files", "top_level_keys", "unknown_keys"]

_CLASS_KEYS = ("class_path", "init_args", "dict_kwargs", "__path__")
_OPTIMIZER_KEYS = {
    "learning_rate": "optimizer.init_args.lr",
    "lr": "optimizer.init_args.lr",
    "weight_decay": "optimizer.init_args.weight_decay",
    "momentum": "optimizer.init_args.momentum",
}
"""Optimizer settings written as model arguments, and where they go."""
_ORDINALS = ("1st", "2nd", "3rd")


def config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config`` / ``-c`` values of ``argv``, in order."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _parameters(cls: type) -> set[str] | None:
    """The arguments jsonargparse accepts for ``cls``: its ``__init__``'s, following ``**kwargs`` up the MRO.

    ``None`` when ``**kwargs`` reaches a class that does not say what it takes (then nothing is checked).
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        if klass is object:
            return None
        parameters = list(inspect.signature(init).parameters.values())[1:]
        names.update(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def _chosen_class(argv: Sequence[str], contents: list[Any], group: str, default: str | None) -> str | None:
    """The class of ``group`` the command ends up with: the last ``--group X`` flag or ``class_path`` in a file."""
    chosen = default
    for content in contents:
        section = content.get(group) if isinstance(content, dict) else None
        if isinstance(section, dict) and isinstance(section.get("class_path"), str):
            chosen = section["class_path"]
    for i, arg in enumerate(argv):
        if arg == f"--{group}" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            chosen = argv[i + 1]
        elif arg.startswith(f"--{group}=") and "." not in arg.split("=", 1)[0]:
            chosen = arg.split("=", 1)[1]
        elif arg == f"--{group}.class_path" and i + 1 < len(argv):
            chosen = argv[i + 1]
    return chosen


def _suggest(key: str, known: set[str], group: str, prefix: str) -> str:
    if group == "model" and key in _OPTIMIZER_KEYS:
        return f" It is the optimizer's: `model.init_args.{_OPTIMIZER_KEYS[key]}`."
    close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(f'`{prefix}{name}`' for name in close)}?" if close else ""


def _nested(content: dict) -> dict:
    """``content`` with dotted keys (``trainer.max_epochs: 3``, which jsonargparse accepts) as nested mappings."""
    nested: dict = {}
    for key, value in content.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    return nested


def unknown_keys(content: Any, groups: dict[str, tuple[str, set[str]]], top_level: set[str]) -> list[str]:
    """The unknown keys of one config file's content, each as ``key: why``.

    Args:
        content: The file's YAML content.
        groups: ``{"model": (owner name, its arguments), ...}`` for the sections that are checked.
        top_level: The keys the subcommand takes at the top (``trainer``, ``model``, ``ckpt_path``, ...).

    Returns:
        One line per unknown key.
    """
    if not isinstance(content, dict):
        return []
    content = _nested(content)
    problems = []
    for key, value in content.items():
        if key not in top_level:
            close = difflib.get_close_matches(str(key), sorted(top_level), n=1, cutoff=0.6)
            hint = f" Did you mean `{close[0]}`?" if close else f" The top-level keys: {', '.join(sorted(top_level))}."
            problems.append(f"`{key}`: not a setting of this command.{hint}")
            continue
        if key not in groups or not isinstance(value, dict):
            continue
        owner, known = groups[key]
        sections = [(f"{key}.", value)]
        if isinstance(value.get("init_args"), dict):
            sections.append((f"{key}.init_args.", value["init_args"]))
        for prefix, section in sections:
            for name in section:
                if name in known or (prefix == f"{key}." and name in _CLASS_KEYS):
                    continue
                hint = _suggest(str(name), known, key, prefix)
                problems.append(f"`{prefix}{name}`: not an argument of {owner}.{hint}")
    return problems


def _groups(argv: Sequence[str], contents: list[Any]) -> dict[str, tuple[str, set[str]]]:
    from lightning.pytorch import Trainer

    from lit_transfer.cli.messages import import_class

    groups: dict[str, tuple[str, set[str]]] = {}
    trainer = _parameters(Trainer)
    if trainer is not None:
        groups["trainer"] = ("the Trainer", trainer)
    for group, default in (("model", "TransferClassifier"), ("data", None)):
        class_path = _chosen_class(argv, contents, group, default)
        try:
            cls = import_class(class_path) if class_path else None
        except (ImportError, AttributeError, ValueError):
            cls = None
        known = _parameters(cls) if isinstance(cls, type) else None
        if cls is not None and known is not None:
            groups[group] = (cls.__name__, known)
    return groups


def check_config_keys(argv: Sequence[str], top_level: set[str]) -> None:
    """Raise one message naming every unknown key of every ``--config`` file of ``argv``; return if there is none.

    Args:
        argv: The command line (``--config`` values already resolved to the files read).
        top_level: The keys the subcommand takes at the top.

    Raises:
        ValueError: Listing, per file, each unknown key with a suggestion.
    """
    files = config_files(argv)
    contents = []
    for path in files:
        try:
            contents.append(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            contents.append(None)  # not a file (a YAML string) or unreadable: the parser's message stands
    groups = _groups(argv, contents)
    found = []
    for number, (path, content) in enumerate(zip(files, contents), start=1):
        ordinal = _ORDINALS[number - 1] if number <= len(_ORDINALS) else f"{number}th"
        found += [(f"{path} (the {ordinal} --config)", problem) for problem in unknown_keys(content, groups, top_level)]
    if len(found) == 1:
        where, problem = found[0]
        raise ValueError(f"{where}: {problem.replace('`: not', '` is not', 1)}")
    if found:
        blocks = []
        for where in dict.fromkeys(w for w, _ in found):
            blocks.append(f"{where}:\n" + "\n".join(f"  {p}" for w, p in found if w == where))
        closing = f"{len(found)} unknown keys in the --config files above: rename or remove them."
        raise ValueError("\n".join([*blocks, closing]))


def top_level_keys(parser: Any) -> set[str]:
    """The keys a parser takes at the top of a config file (the first part of each option's name)."""
    return {action.dest.split(".")[0] for action in parser._actions if action.dest not in ("help", "print_config")}
