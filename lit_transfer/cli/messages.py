"""Short messages for a user's mistakes on the ``lit-transfer`` command line.

A mistake in a config or on the command line reaches the user through jsonargparse (nested "Does not validate
against any of the Union subtypes" reports with a ``Namespace`` dump) or as a traceback through Lightning. Both
bury the one sentence that matters. :func:`user_error_message` recovers that sentence, and for an unknown option
adds the nearest known names; the CLI prints it as the last thing the run says.

What counts as a user's mistake: a parse error, an error raised by lit_transfer's own checks (the code that
validates arguments, files and data, and looks for pretrained weights), and Lightning's
``MisconfigurationException``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from lit_transfer.cli.arguments import command_line_value
from lit_transfer.errors import WeightsUnavailableError

__all__ = ["finish_message", "import_class", "suggest_option", "user_error_message"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # lit_transfer/, every subpackage included
_USER_ERROR_TYPES = (ValueError, TypeError, OSError, WeightsUnavailableError)
"""Errors that report a user's mistake or setup when the package raises them (weights that are neither cached nor
downloadable are fixed by the user: a network, a cache, or a local file)."""
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: |Errors:|Expected a <class 'NoneType'>"
    r"|Given value type: |Given value: |Parser key \"\w+\":$)"
)
_LITERAL = re.compile(r"Expected a (?:typing\.)?Literal\[(?P<choices>[^\]]*)\]\. Got value: (?P<value>.*)")
_OPTIMIZER_KEYS = {"learning_rate": "lr", "lr": "lr", "weight_decay": "weight_decay", "momentum": "momentum"}
"""Optimizer settings given to the model, and the optimizer's argument that takes them."""
_UNKNOWN_OPTION = [
    re.compile(
        r"Parser key \"(?P<group>\w+)\":.*?Problem with given class_path '(?P<cls>[\w.]+)':\s*"
        r"Option '(?P<key>[\w.]+)' is not accepted",
        re.S,
    ),
    re.compile(r"unrecognized arguments: --(?P<group>\w+)\.(?:init_args\.)?(?P<key>[\w.]+)", re.I),
    re.compile(r"does not accept option '(?P<group>\w+)\.(?P<key>[\w.]+)'"),
]


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_package(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is lit_transfer's own code (a deliberate check)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def _is_misconfiguration(err: BaseException) -> bool:
    return type(err).__name__ == "MisconfigurationException"


def import_class(class_path: str) -> type:
    """The class a dotted ``module.Name`` path names (a bare ``Name`` is looked up in ``lit_transfer``)."""
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name or "lit_transfer"), name)


def _class_parameters(class_path: str) -> list[str]:
    try:
        return [
            p for p in inspect.signature(import_class(class_path)).parameters if p not in ("self", "args", "kwargs")
        ]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


def suggest_option(group: str, key: str, class_path: str | None, argv: Sequence[str] = ()) -> str:
    """The sentence for an unknown ``--<group>.<key>``: the nearest names, or the class that takes ``key``.

    Args:
        group: ``"model"``, ``"data"`` or ``"trainer"``.
        key: The unknown name (``"backbon"``).
        class_path: The configured class of ``group`` (``None`` for the Trainer).
        argv: The command line; when the user typed the option as a flag, the names are given as flags.

    Returns:
        One or two sentences.
    """
    message = _suggest_option(group, key, class_path)
    if command_line_value(argv, group, key) is not None:
        message = re.sub(rf"`({group}\.[\w.]+)`", r"`--\1`", message)
    return message


def _suggest_option(group: str, key: str, class_path: str | None) -> str:
    from lit_transfer.data import CSVDataModule, DigitsDataModule, ImageFolderDataModule

    if group == "trainer":
        from lightning.pytorch import Trainer

        known = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
        owner = "the Trainer"
    else:
        known = _class_parameters(class_path or "")
        owner = (class_path or group).rsplit(".", 1)[-1]
    message = f"`{group}.{key}` is not an argument of {owner}."
    if group == "model" and key in _OPTIMIZER_KEYS and "optimizer" in known:
        return message + f" It is the optimizer's: `model.optimizer.init_args.{_OPTIMIZER_KEYS[key]}`."
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return message + " Did you mean " + ", ".join(f"`{group}.{name}`" for name in close) + "?"
    if group == "data":
        for cls in (ImageFolderDataModule, CSVDataModule, DigitsDataModule):
            other = difflib.get_close_matches(key, list(inspect.signature(cls).parameters), n=1, cutoff=0.75)
            if other and cls.__name__ != owner:
                example = "path/to/images" if other[0] == "root" else "..."
                return (
                    message + f" `{other[0]}` is an argument of {cls.__name__}: choose that DataModule first, e.g."
                    f" `--data {cls.__name__} --data.{other[0]} {example}`."
                )
    if known:
        return message + f" Its arguments: {', '.join(known)}."
    return message


def _condense_parse_error(text: str, argv: Sequence[str] = ()) -> str:
    for pattern in _UNKNOWN_OPTION:
        found = pattern.search(text)
        if found:
            parts = found.groupdict()
            return suggest_option(parts["group"], parts["key"], parts.get("cls"), argv)
    literal = _LITERAL.search(text)
    if literal:
        key = re.search(r'Parser key "([\w.]+)"', text)
        name = f"`--{key[1]}`" if key else "The value"
        choices = ", ".join(c.strip().strip("'\"") for c in literal["choices"].split(","))
        return f"{name} takes one of: {choices}; got {literal['value'].strip()!r}."
    text = re.sub(r"^.*?Call to compute_fn of link '.*?' with args \(.*?\) failed: ", "", text, flags=re.S)
    lines = [line.strip().removeprefix("- ").strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not _NOISE.match(line) and not line.startswith("Problem with given")]
    return "\n".join(dict.fromkeys(kept))


def user_error_message(err: BaseException, argv: Sequence[str] = ()) -> str | None:
    """The short message for a user's mistake, or ``None`` when ``err`` is not one (a bug keeps its traceback).

    Args:
        err: The exception that ended the command.
        argv: The command line: hints then spell arguments as flags where the user typed flags.

    Returns:
        The message to print, ending with the package's own sentence; ``None`` for other errors.
    """
    chain = list(_chain(err))
    for cause in reversed(chain):  # the innermost deliberate check says the most
        if (isinstance(cause, _USER_ERROR_TYPES) and _raised_by_package(cause)) or _is_misconfiguration(cause):
            return finish_message(str(cause).strip(), argv)
    if isinstance(err, argparse.ArgumentError):
        return finish_message(_condense_parse_error(str(err), argv), argv)
    return None


def _typed_flags(argv: Sequence[str]) -> bool:
    return any(arg.startswith(("--model.", "--data.", "--trainer.")) for arg in argv)


def _flag_spelling(message: str) -> str:
    """``name='value'`` hints for a DataModule's or a model's argument, spelled ``--data.name value``."""
    from lit_transfer.data import CSVDataModule, DigitsDataModule, ImageFolderDataModule

    groups = {
        "data": [ImageFolderDataModule, CSVDataModule, DigitsDataModule],
        "model": [import_class("TransferClassifier"), import_class("TransferRegressor")],
    }

    def flag(found: re.Match[str]) -> str:
        name, value = found["name"], found["value"].strip("'\"")
        value = {"None": "null", "True": "true", "False": "false"}.get(value, value)  # as a flag's value is written
        for group, classes in groups.items():
            bases = [k for c in classes for k in c.__mro__ if k is not object]  # **kwargs go up to the bases
            if any(name in _class_parameters(f"{k.__module__}.{k.__name__}") for k in bases):
                return f"`--{group}.{name} {value}`"
        return found[0]

    return re.sub(r"`(?P<name>[a-z_]\w*)=(?P<value>'[^'`]*'|\"[^\"`]*\"|[^`\s]+)`", flag, message)


def _looked_for() -> str:
    from lit_transfer.data.decode import IMG_EXTENSIONS

    return ", ".join(IMG_EXTENSIONS)


def finish_message(message: str, argv: Sequence[str] = ()) -> str:
    """The message as the command prints it: hints in the user's spelling, a sentence last, the extensions named.

    * ``name='value'`` hints become ``--data.name value`` when the user typed ``--model.``/``--data.`` flags;
    * a message that ends on a list of files gets a closing sentence (the fix), so its last line is not a path;
    * "no image files" and the ``<class>/*.png`` layout say which file extensions are images.

    Args:
        message: The message of the error.
        argv: The command line.

    Returns:
        The message to print.
    """
    if _typed_flags(argv):
        message = _flag_spelling(message)
    extensions = _looked_for()
    message = message.replace("<class>/*.png", "<class>/<image files>")
    message = re.sub(r"(no image files)(?! \(looked for)", rf"\1 (looked for {extensions}, any case)", message)
    if "<class>/<image files>" in message and "looked for" not in message:
        message += f" Image files: {extensions} (any case)."
    lines = message.splitlines()
    if len(lines) > 1 and lines[-1][:1].isspace():  # ends on a list item, a file path
        missing = re.search(r"^`(?P<arg>\w+)` (?P<table>'[^']*') lists (?P<n>\d+) file\(s\) that do not exist", message)
        if missing:
            fix = f"Fix the path(s) above in {missing['table']} (relative to its folder) or drop their rows."
            message += "\n" + fix
        else:
            message += "\n" + lines[0].rstrip(":") + "."
    return message
