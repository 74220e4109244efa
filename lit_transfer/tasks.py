"""What a model's outputs mean: its task, class or target names, thresholds and target statistics.

The prediction writer, the exporter and the run report read these from any LightningModule: attributes first
(:class:`~lit_transfer.TransferClassifier` and :class:`~lit_transfer.TransferRegressor` have them), then
hyper-parameters, then defaults, so plain modules work too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["class_names_of", "target_names_of", "target_stats_of", "task_of", "thresholds_of"]


def _hparams(module: nn.Module) -> Any:
    return getattr(module, "hparams", None) or {}


def task_of(module: nn.Module) -> str:
    """The task: ``"multiclass"``, ``"binary"``, ``"multilabel"`` or ``"regression"``.

    The module's ``task`` attribute or hyper-parameter; ``"regression"`` for a module with ``num_outputs`` and no
    ``num_classes`` hyper-parameter; else ``"multiclass"``.

    Example:
        >>> task_of(nn.Linear(2, 3))
        'multiclass'
    """
    hparams = _hparams(module)
    task = getattr(module, "task", None) or hparams.get("task")
    if isinstance(task, str) and task:
        return task
    return "regression" if "num_outputs" in hparams and "num_classes" not in hparams else "multiclass"


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
