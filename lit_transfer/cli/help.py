"""What ``lit-transfer --help`` and ``lit-transfer SUBCOMMAND --help`` say.

LightningCLI's help is Lightning's: "Lightning Trainer command line tool", ``lr_find`` where the docs say
``lr-find``, and a ``fit --help`` of some 500 lines, 420 of them Trainer options, before the model and data. Here the
main help describes this package and its other commands (``recipes``, ``--version``), and a subcommand's help leads
with the model and data (the options a user sets most, from the classes' own docstrings), then ``--ckpt_path`` in
this CLI's terms, then the few Trainer options most runs touch; ``--help-all`` shows every Trainer option and the
linked arguments as well.

:func:`tailor_help` rewrites the parsers' texts after LightningCLI built them; parsing is unchanged.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from jsonargparse import DefaultHelpFormatter

from lit_transfer._version import VERSION_LINE

__all__ = ["HELP_ALL", "add_version_argument", "help_all_requested", "tailor_help"]

HELP_ALL = "--help-all"
"""Shows every option of a subcommand (all of Lightning's Trainer options, the linked arguments)."""

DESCRIPTION = (
    "lit-transfer: transfer learning on small image datasets with a timm backbone (hub weights or a local file),"
    " freezing policies, layer-wise LR decay and Albumentations data, trained by Lightning.\n\n"
    "Start from a recipe: `lit-transfer fit --config recipes/defaults.yaml --config recipes/fine_tune.yaml`."
    " Several --config files compose left to right; `--model.*`, `--data.*` and `--trainer.*` flags override them."
    " Exit status: 0 on success, 2 on a mistake in the command, a config or the data (the reason is the last line)."
)

EPILOG = (
    "Other commands:\n"
    "  lit-transfer recipes                    list the recipes shipped with the package\n"
    "  lit-transfer recipes copy NAME [DEST]   copy one out to edit it (`--config recipes/NAME.yaml` then reads it)\n"
    "  lit-transfer SUBCOMMAND --help          a subcommand's main options (--help-all: every Trainer option)\n"
    "Documentation: the docs/ pages of the source distribution (install.md, getting-started.md)."
)

_SUBCOMMANDS = {
    "fit": "Train a model (and resume a run with --ckpt_path last).",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate a checkpoint on the test split; writes a report into the run's test/ folder.",
    "predict": "Predict the images of the predict split; writes predictions.csv into the run's predict/ folder.",
    "lr_find": "Run an LR range test and print the learning rate to pass to fit (also spelled lr_find).",
}
_SHOWN_AS = {"lr_find": "lr-find"}

_MODEL_OPTIONS = ("backbone", "pretrained", "freeze", "layer_decay", "optimizer", "lr_scheduler")
_DATA_OPTIONS = ("root", "batch_size", "image_size", "train_transform")
_TRAINER_OPTIONS = ("max_epochs", "accelerator", "devices", "precision", "accumulate_grad_batches", "default_root_dir")

_CKPT_PATH = {
    "fit": (
        "Resume training: `last` continues the newest run's last.ckpt under"
        " <trainer.default_root_dir>/lightning_logs (a fit without one starts a new run), `best` its best.ckpt, or a"
        " path, e.g. .../checkpoints/on_exception.ckpt written when a run was interrupted. The run continues in a new"
        " version_N folder. Read with weights_only=True."
    ),
    "other": (
        "The checkpoint to evaluate: `best` (the newest run's best.ckpt under"
        " <trainer.default_root_dir>/lightning_logs), `last`, or a path to a .ckpt written by fit. The model and its"
        " preprocessing come from the checkpoint; the report goes into that run's folder. Read with weights_only=True."
    ),
}


_ROW = re.compile(r"^(\s+(?:--|lit-transfer )\S*(?: \S+)*?\s{2,})\S")


class LineFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter that keeps the line breaks of descriptions and epilogs (each line still wraps)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            row = _ROW.match(line)  # "  --option   text": wrapped under its text
            hang = " " * len(row[1]) if row else line[: len(line) - len(line.lstrip())]
            first = indent + line[: len(line) - len(line.lstrip())]
            wrapped = textwrap.wrap(line.strip(), width, initial_indent=first, subsequent_indent=indent + hang)
            lines.extend(wrapped or [""])
        return "\n".join(lines)


def help_all_requested(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` with ``--help-all`` spelled ``--help``, and whether it was given."""
    if HELP_ALL not in argv:
        return list(argv), False
    return ["--help" if arg == HELP_ALL else arg for arg in argv], True


def _first_sentence(text: str) -> str:
    text = " ".join(re.sub(r"``([^`]*)``|:\w+:`~?([^`]*)`", lambda m: m[1] or m[2], text).split())
    end = re.search(r"(?<=[.;])\s", text)
    return (text[: end.start()] if end else text).rstrip(";")


def _documented(classes: Sequence[type], names: Sequence[str]) -> dict[str, str]:
    """The first sentence of each name's ``Args:`` entry, looked up along the classes' MRO."""
    from docstring_parser import parse

    found: dict[str, str] = {}
    for cls in classes:
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            for doc in (klass.__doc__, getattr(init, "__doc__", None)):
                for param in parse(doc or "").params:
                    if param.arg_name in names and param.arg_name not in found and param.description:
                        found[param.arg_name] = _first_sentence(param.description)
    return {name: found[name] for name in names if name in found}


def _option_lines(group: str, options: dict[str, str]) -> str:
    width = max(len(f"--{group}.{name}") for name in options)
    return "\n".join(f"  {f'--{group}.{name}':<{width}}  {text}" for name, text in options.items())


def _model_description() -> str:
    from lit_transfer.models import TransferClassifier, TransferRegressor

    options = _documented([TransferClassifier, TransferRegressor], _MODEL_OPTIONS)
    return (
        "TransferClassifier (the default), TransferRegressor (`--model TransferRegressor`) or TransferSegmenter (a"
        " class per pixel: `--model TransferSegmenter`). The main options:\n"
        f"{_option_lines('model', options)}\n"
        "Every option: `--model.help TransferClassifier` (or TransferRegressor, TransferSegmenter)."
    )


def _data_description() -> str:
    from lit_transfer.data import CSVDataModule, ImageFolderDataModule

    options = _documented([ImageFolderDataModule, CSVDataModule], _DATA_OPTIONS)
    return (
        "DigitsDataModule (the embedded digits), ImageFolderDataModule (class folders:"
        " `--data ImageFolderDataModule --data.root path/to/images`), CSVDataModule, or for masks"
        " SegmentationFolderDataModule and SegmentationCSVDataModule. The main options:\n"
        f"{_option_lines('data', options)}\n"
        "Every option: `--data.help ImageFolderDataModule` (or CSVDataModule, DigitsDataModule)."
    )


def add_version_argument(parser: Any) -> None:
    """``lit-transfer --version``: prints ``lit-transfer <version>`` and exits (added once)."""
    if not any("--version" in action.option_strings for action in parser._actions):
        parser.add_argument("--version", action="version", version=VERSION_LINE, help="Print the version and exit.")


def _describe_main(parser: Any) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = LineFormatter
    add_version_argument(parser)
    for action in parser._actions:
        if action.__class__.__name__ != "ActionSubCommands":
            continue
        action.metavar = "{" + ",".join(_SHOWN_AS.get(name, name) for name in action.choices) + "}"
        for choice in action._choices_actions:
            name = choice.dest
            choice.metavar = choice.dest = _SHOWN_AS.get(name, name)
            choice.help = _SUBCOMMANDS.get(name, choice.help)


def _group_of(parser: Any, dest: str) -> Any:
    return next((g for g in parser._action_groups if any(a.dest == dest for a in g._group_actions)), None)


def _describe_subcommand(name: str, parser: Any, full: bool) -> None:
    shown = _SHOWN_AS.get(name, name)
    parser.prog = parser.prog.rsplit(" ", 1)[0] + f" {shown}"
    parser.description = _SUBCOMMANDS.get(name, parser.description or "")
    if not full:
        parser.description += f"\nThe main options; every Trainer option: `lit-transfer {shown} {HELP_ALL}`."
    parser.formatter_class = LineFormatter
    model, data, trainer = (_group_of(parser, d) for d in ("model", "data", "trainer"))
    ckpt, linked = _group_of(parser, "ckpt_path"), _group_of(parser, "model.init_args.num_classes")
    if model is not None:
        model.title, model.description = "Model", _model_description()
    if data is not None:
        data.title, data.description = "Data", _data_description()
    if ckpt is not None:
        ckpt.title = "Checkpoint"
        for action in ckpt._group_actions:
            if action.dest == "ckpt_path":
                action.help = _CKPT_PATH["fit" if name == "fit" else "other"]
    if trainer is not None:
        trainer.title = "Trainer (Lightning's options)" if full else "Trainer (the most used of Lightning's options)"
        for action in trainer._group_actions:
            keep = full or action.dest.removeprefix("trainer.") in _TRAINER_OPTIONS
            if not keep:
                action.help = argparse.SUPPRESS
    if linked is not None and not full:
        for action in linked._group_actions:
            action.help = argparse.SUPPRESS
    first = [g for g in (model, data, ckpt) if g is not None]
    rest = [g for g in parser._action_groups if g not in first]
    options = [g for g in rest if g.title in ("positional arguments", "options")]
    parser._action_groups[:] = options + first + [g for g in rest if g not in options]


def tailor_help(parser: Any, subcommand_parsers: dict[str, Any], full: bool = False) -> None:
    """Give the main parser and each subcommand parser this package's help texts.

    Args:
        parser: The main ``lit-transfer`` parser.
        subcommand_parsers: The parser of each subcommand (``fit``, ..., ``lr_find``).
        full: Show every Trainer option and the linked arguments (``--help-all``).
    """
    _describe_main(parser)
    for name, subparser in subcommand_parsers.items():
        _describe_subcommand(name, subparser, full)
