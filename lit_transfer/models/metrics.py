"""Metrics per split and task, from torchmetrics (reduced across DDP ranks by torchmetrics itself).

* multiclass: :func:`classification_metrics`, updated with logits.
* multilabel and binary: :class:`ThresholdedMetrics`, a collection updated with probabilities (average precision,
  AUROC: threshold-free) and one updated with 0/1 decisions at the model's thresholds (F1, accuracy), so that tuned
  per-label thresholds count.
* regression: :func:`regression_metrics` (MAE, RMSE, R², and each target's MAE), updated with values in original
  units.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import ClasswiseWrapper, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

__all__ = ["ThresholdedMetrics", "classification_metrics", "regression_metrics"]


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 accuracy, top-5 accuracy (when there are more than 5 classes) and macro F1.

    Args:
        num_classes: Number of classes.
        prefix: Prefix of the logged names, e.g. ``"val_"`` gives ``val_acc``, ``val_acc_top5``, ``val_f1``.

    Returns:
        A metric collection updated with ``(logits, targets)``.

    Example:
        >>> sorted(classification_metrics(10, "val_").keys(keep_base=False))
        ['val_acc', 'val_acc_top5', 'val_f1']
    """
    metrics: dict[str, Metric | MetricCollection] = {
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ThresholdedMetrics(nn.Module):
    """Metrics of a multi-label or binary classifier: threshold-free ones on probabilities, the others on decisions.

    Multi-label (``L`` labels): ``<prefix>map`` (macro average precision), ``<prefix>ap_<label>`` (each label's
    average precision) and ``<prefix>f1`` (macro F1 of the decisions). Binary: ``<prefix>auroc``, ``<prefix>acc``
    and ``<prefix>f1``. With ``ranking=False`` (the training split: average precision and AUROC keep every
    prediction of the epoch) only the decision metrics.

    Args:
        task: ``"multilabel"`` or ``"binary"``.
        label_names: The label names (multi-label; one for binary).
        prefix: Prefix of the logged names (``"val_"``).
        ranking: Whether to keep the threshold-free metrics.

    Example:
        >>> metrics = ThresholdedMetrics("multilabel", ["cat", "dog"], "val_")
        >>> labels = torch.tensor([[1, 0], [0, 1]])
        >>> metrics.update(torch.tensor([[0.9, 0.2], [0.4, 0.7]]), labels, labels)
        >>> {name: round(float(value), 3) for name, value in sorted(metrics.compute().items())}
        {'val_ap_cat': 1.0, 'val_ap_dog': 1.0, 'val_f1': 1.0, 'val_map': 1.0}
    """

    def __init__(self, task: str, label_names: Sequence[str], prefix: str, ranking: bool = True) -> None:
        super().__init__()
        count = len(label_names)
        scores: dict[str, Metric | MetricCollection] = {}
        decisions: dict[str, Metric | MetricCollection]
        if task == "multilabel":
            if ranking:
                scores["map"] = MultilabelAveragePrecision(num_labels=count, average="macro")
                # a dict-valued metric: logged by the model at epoch end (`per_label_values`), not by `log_dict`
                self.per_label: ClasswiseWrapper | None = ClasswiseWrapper(
                    MultilabelAveragePrecision(num_labels=count, average=None),
                    labels=list(label_names),
                    prefix=f"{prefix}ap_",
                )
            decisions = {"f1": MultilabelF1Score(num_labels=count, average="macro")}
        else:
            if ranking:
                scores["auroc"] = BinaryAUROC()
            decisions = {"acc": BinaryAccuracy(), "f1": BinaryF1Score()}
        if task != "multilabel" or not ranking:
            self.per_label = None
        self.task = task
        self.scores = MetricCollection(scores, prefix=prefix) if scores else None
        self.decisions = MetricCollection(decisions, prefix=prefix)

    def collections(self) -> list[MetricCollection]:
        """The metric collections, for ``LightningModule.log_dict``."""
        return [c for c in (self.scores, self.decisions) if c is not None]

    def update(self, probs: torch.Tensor, decisions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: probabilities and 0/1 decisions and targets, all ``(N, L)`` (``(N, 1)`` for binary)."""
        hard = (targets > 0.5).long()  # mixed or smoothed targets never reach metrics; this keeps the dtype right
        if self.task == "binary":
            probs, decisions, hard = probs[:, 0], decisions[:, 0], hard[:, 0]
        if self.scores is not None:
            self.scores.update(probs, hard)
        if self.per_label is not None:
            self.per_label.update(probs, hard)
        self.decisions.update(decisions.long(), hard)

    def per_label_values(self) -> dict[str, torch.Tensor]:
        """Each label's average precision, ``{"<prefix>ap_<label>": value}`` (``{}`` without them); then reset.

        Every DDP rank must call it (torchmetrics gathers the predictions of all ranks).
        """
        if self.per_label is None or not self.per_label.update_called:
            return {}
        values = dict(self.per_label.compute())
        self.per_label.reset()
        return values

    def compute(self) -> dict[str, torch.Tensor]:
        """Every metric's value (Lightning computes the collections itself when they are logged)."""
        values: dict[str, torch.Tensor] = {}
        for collection in self.collections():
            values.update(collection.compute())
        if self.per_label is not None and self.per_label.update_called:
            values.update(self.per_label.compute())
        return values


def regression_metrics(num_outputs: int, prefix: str, target_names: Sequence[str] | None = None) -> MetricCollection:
    """MAE and RMSE over every output value, R² averaged over outputs, and each output's MAE when there are several.

    ``<prefix>mae`` averages every target's errors together, whatever their units; ``<prefix>mae_<target>`` keeps
    each target in its own.

    Args:
        num_outputs: Number of regression outputs.
        prefix: Prefix of the logged names, e.g. ``"val_"`` gives ``val_mae``, ``val_rmse``, ``val_r2``.
        target_names: Names of the outputs, for ``<prefix>mae_<name>`` (default ``value_<i>``); a single output
            gets no per-target MAE (it is ``<prefix>mae``).

    Returns:
        A metric collection updated with ``(predictions, targets)``, both ``(N, num_outputs)``.

    Example:
        >>> metrics = regression_metrics(1, "val_")
        >>> metrics.update(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[1.0], [3.0], [3.0]]))
        >>> {name: round(float(value), 3) for name, value in sorted(metrics.compute().items())}
        {'val_mae': 0.667, 'val_r2': 0.25, 'val_rmse': 0.816}
        >>> metrics = regression_metrics(2, "val_", ["age", "height"])
        >>> metrics.update(torch.tensor([[30.0, 1.7], [40.0, 1.8]]), torch.tensor([[32.0, 1.7], [40.0, 1.6]]))
        >>> {name: round(float(value), 3) for name, value in sorted(metrics.compute().items()) if "mae" in name}
        {'val_mae': 0.55, 'val_mae_age': 1.0, 'val_mae_height': 0.1}
    """
    metrics: dict[str, Metric | MetricCollection] = {
        "mae": MeanAbsoluteError(),
        "rmse": MeanSquaredError(squared=False),
        "r2": _R2(multioutput="uniform_average", **_r2_size(num_outputs)),
    }
    if num_outputs > 1:
        names = list(target_names) if target_names else [f"value_{i}" for i in range(num_outputs)]
        if len(names) != num_outputs:
            raise ValueError(f"`target_names` has {len(names)} names for {num_outputs} outputs: {names}.")
        metrics.update({f"mae_{name}": _ColumnMAE(column) for column, name in enumerate(names)})
    # no compute groups: per-target metrics hold the same kind of state and must never be merged
    return MetricCollection(metrics, prefix=prefix, compute_groups=num_outputs == 1)


class _ColumnMAE(MeanAbsoluteError):
    """The mean absolute error of one output column of ``(N, K)`` predictions and targets."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds[:, self.column], target[:, self.column])


def _r2_size(num_outputs: int) -> dict[str, int]:
    """``num_outputs`` for torchmetrics versions whose ``R2Score`` sizes its state by it (1.9 infers it)."""
    return {"num_outputs": num_outputs} if "num_outputs" in inspect.signature(R2Score.__init__).parameters else {}


class _R2(R2Score):
    """torchmetrics' R² taking ``(N, 1)`` for one output, as the other regression metrics do."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == 2 and preds.shape[1] == 1:
            preds, target = preds[:, 0], target[:, 0]
        super().update(preds, target)
