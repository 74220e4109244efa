"""The one owner of "which task": a model's task and names, the data each task trains on, the metric of ``best``.

A model's task, class or target names, thresholds and target statistics, the DataModule task each model task trains
on, and the metric ``best.ckpt`` is chosen by. The prediction writer, the exporter, the run report and the CLI read
these from any LightningModule: attributes first (the package's models have them), then hyper-parameters, then
defaults, so plain modules work too. A model class states its task with a ``task`` constructor argument (the
classifier) or a ``default_task`` class attribute (the regressor); nothing here reads class names.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = [
    "DATA_TASK",
    "MONITOR",
    "TASKS",
    "check_data_task",
    "class_names_of",
    "model_task",
    "same_target_stats",
    "target_names_of",
    "target_stats_of",
    "task_of",
    "task_of_hparams",
    "thresholds_of",
]

TASKS = ("multiclass", "binary", "multilabel", "regression", "segmentation")
"""Every task a lit_transfer model trains for."""

DATA_TASK = {
    "multiclass": "multiclass",
    "binary": "multiclass",
    "multilabel": "multilabel",
    "regression": "regression",
    "segmentation": "segmentation",
}
"""The DataModule ``task`` each model task trains on (a binary classifier takes a 2-class multiclass DataModule)."""

MONITOR: dict[str, tuple[str, str]] = {
    "multiclass": ("val_acc", "max"),
    "binary": ("val_acc", "max"),
    "multilabel": ("val_map", "max"),
    "regression": ("val_mae", "min"),
    "segmentation": ("val_miou", "max"),
}
"""The validation metric ``best.ckpt`` is chosen by, per task, and whether higher (``max``) or lower is better."""

_DATA_OPTIONS = {
    "multiclass": "an image-folder DataModule, or CSVDataModule with one class per row in `label_column`",
    "multilabel": "CSVDataModule with `label_columns`, one 0/1 column per label, or `label_delimiter`",
    "regression": "CSVDataModule with `target_columns`",
    "segmentation": "SegmentationFolderDataModule or SegmentationCSVDataModule (an image and a mask per sample)",
}


def _hparams(module: nn.Module) -> Any:
    return getattr(module, "hparams", None) or {}


def task_of_hparams(hparams: Mapping[str, Any]) -> str:
    """The task recorded in a model's hyper-parameters (for example a checkpoint's ``hyper_parameters``).

    ``task`` when recorded; ``"regression"`` for hyper-parameters with ``num_outputs`` and no ``num_classes`` (a
    regressor's, whose task is its class's); ``"segmentation"`` for hyper-parameters with a ``decoder`` (a
    segmenter's); else ``"multiclass"``.

    Example:
        >>> task_of_hparams({"num_outputs": 2}), task_of_hparams({"num_classes": 3, "task": "multilabel"})
        ('regression', 'multilabel')
        >>> task_of_hparams({"num_classes": 3, "decoder": "unet"})
        'segmentation'
    """
    task = hparams.get("task")
    if isinstance(task, str) and task:
        return task
    if "decoder" in hparams:
        return "segmentation"
    return "regression" if "num_outputs" in hparams and "num_classes" not in hparams else "multiclass"


def task_of(module: nn.Module) -> str:
    """The task: ``"multiclass"``, ``"binary"``, ``"multilabel"`` or ``"regression"``.

    The module's ``task`` attribute, else :func:`task_of_hparams` of its hyper-parameters.

    Example:
        >>> task_of(nn.Linear(2, 3))
        'multiclass'
    """
    task = getattr(module, "task", None)
    return task if isinstance(task, str) and task else task_of_hparams(_hparams(module))


def model_task(model_class: type, init_args: Any = None) -> str:
    """The task a model class trains for when built with ``init_args`` (before it is built).

    ``init_args`` is a mapping (or a jsonargparse ``Namespace``) of the arguments. The ``task`` argument given (or its
    default) for a class that takes one, else the class's ``default_task``
    attribute, else ``"multiclass"``.

    Example:
        >>> class Regressor:
        ...     default_task = "regression"
        >>> class Classifier:
        ...     def __init__(self, task: str = "multiclass") -> None: ...
        >>> model_task(Regressor), model_task(Classifier), model_task(Classifier, {"task": "binary"})
        ('regression', 'multiclass', 'binary')
    """
    task = (init_args or {}).get("task")
    if isinstance(task, str) and task:
        return task
    parameter = inspect.signature(model_class).parameters.get("task")
    if parameter is not None and isinstance(parameter.default, str):
        return parameter.default
    return str(getattr(model_class, "default_task", "multiclass"))


def check_data_task(task: str, datamodule: Any, num_classes: int | None = None) -> None:
    """Refuse data whose ``task`` is not the one a model of ``task`` trains on, naming the setting that fixes it.

    Used before a model is built (the CLI) and by the model at ``setup``, with the same words. A DataModule without a
    ``task`` attribute (or plain DataLoaders, ``None``) passes: its batches are checked instead.

    Args:
        task: The model's task (``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"regression"``, ``"segmentation"``).
        datamodule: The DataModule, or ``None``.
        num_classes: The data's class count, when known (a binary model needs 2).

    Raises:
        ValueError: Naming both tasks and the model setting (as a Python argument and as a ``--model`` flag) or the
            data setting that makes them agree.

    Example:
        >>> class Data:
        ...     task = "multilabel"
        >>> check_data_task("multiclass", Data())
        Traceback (most recent call last):
        ...
        ValueError: The data (Data) gives each image a set of labels (multi-label), but the model's `task` is \
'multiclass'. Set `task: multilabel` (`--model.task multilabel` on the command line).
    """
    theirs = getattr(datamodule, "task", None)
    if not isinstance(theirs, str) or theirs not in _DATA_OPTIONS:
        return
    data = f"The data ({type(datamodule).__name__})"
    if (theirs == "segmentation") != (task == "segmentation"):
        if task == "segmentation":
            raise ValueError(
                f"{data} gives one label per image ({theirs}), but `TransferSegmenter` labels every pixel. Give it"
                f" masks: {_DATA_OPTIONS['segmentation']}; or use `TransferClassifier`/`TransferRegressor`."
            )
        raise ValueError(
            f"{data} gives a mask per image (segmentation), but the model (task {task!r}) predicts one label per"
            " image. Use `TransferSegmenter` (`--model TransferSegmenter` on the command line)."
        )
    if theirs == "regression" and task != "regression":
        raise ValueError(
            f"{data} holds regression targets, but the model classifies (`task` {task!r}). Use `TransferRegressor`"
            " (`--model TransferRegressor` on the command line)."
        )
    if theirs != "regression" and task == "regression":
        flags = "--model TransferClassifier" + ("" if theirs == "multiclass" else f" --model.task {theirs}")
        raise ValueError(
            f"{data} holds {theirs} labels, but the model `TransferRegressor` regresses numbers. Use"
            f" `TransferClassifier(task={theirs!r})` (`{flags}` on the command line)."
        )
    if theirs == "multilabel" and task != "multilabel":
        raise ValueError(
            f"{data} gives each image a set of labels (multi-label), but the model's `task` is {task!r}. Set"
            " `task: multilabel` (`--model.task multilabel` on the command line)."
        )
    if theirs == "multiclass" and task == "multilabel":
        binary = " (or `binary`: it has 2 classes)" if num_classes == 2 else ""
        raise ValueError(
            f"{data} gives each image one class, but the model's `task` is 'multilabel'. Set `task: multiclass`"
            f" (`--model.task multiclass` on the command line){binary}, or give the data several labels per image"
            f" ({_DATA_OPTIONS['multilabel']})."
        )
    if theirs == "multiclass" and task == "binary" and num_classes is not None and num_classes != 2:
        raise ValueError(
            f"The model's `task` is 'binary', which needs data with exactly 2 classes, but {data[0].lower()}{data[1:]}"
            f" has {num_classes}. Set `task: multiclass` (`--model.task multiclass` on the command line)."
        )


def same_target_stats(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> bool:
    """Whether two ``target_stats`` (``{"mean": [...], "std": [...]}``) are the same standardisation.

    ``None`` and ``{}`` both mean "not standardised" and equal each other; lists of other lengths or malformed
    statistics differ (no exception).

    Example:
        >>> same_target_stats({"mean": [1.0], "std": [2.0]}, {"mean": [1.0000001], "std": [2.0]})
        True
        >>> same_target_stats(None, {}), same_target_stats({"mean": [1.0], "std": [2.0]}, {"mean": [], "std": []})
        (True, False)
    """
    if not ours or not theirs:
        return not ours and not theirs
    try:
        return all(
            len(ours[key]) == len(theirs[key])
            and all(
                math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(ours[key], theirs[key])
            )
            for key in ("mean", "std")
        )
    except (KeyError, TypeError, ValueError):
        return False


def class_names_of(module: nn.Module, count: int) -> list[str]:
    """The module's ``class_names`` (as strings), else ``"0"`` ... ``count - 1``."""
    names = getattr(module, "class_names", None) or _hparams(module).get("class_names")
    return [str(n) for n in names] if names else [str(i) for i in range(count)]


def target_names_of(module: nn.Module) -> list[str]:
    """A regression module's target names (``value`` for one unnamed target, ``value_<i>`` for several)."""
    hparams = _hparams(module)
    names = getattr(module, "target_names", None) or hparams.get("target_names")
    if names:
        return [str(n) for n in names]
    count = int(hparams.get("num_outputs", 1) or 1)
    return ["value"] if count == 1 else [f"value_{i}" for i in range(count)]


def target_stats_of(module: nn.Module) -> dict[str, list[float]] | None:
    """A regression module's target statistics ``{"mean": [...], "std": [...]}``, or ``None``."""
    stats = getattr(module, "target_stats", None) or _hparams(module).get("target_stats")
    if not stats:
        return None
    return {"mean": [float(v) for v in stats["mean"]], "std": [float(v) for v in stats["std"]]}


def thresholds_of(module: nn.Module) -> list[float] | None:
    """A binary or multi-label module's decision thresholds (one per output), or ``None``."""
    thresholds = getattr(module, "thresholds", None)
    if thresholds is None:
        return None
    values = thresholds.tolist() if hasattr(thresholds, "tolist") else list(thresholds)
    return [float(v) for v in (values if isinstance(values, list) else [values])]
