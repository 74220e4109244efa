"""Decision thresholds of multi-label and binary classifiers, tuned for F1 on the validation split.

:class:`ThresholdTuner` accumulates a binned precision-recall curve per label (torchmetrics'
``MultilabelPrecisionRecallCurve`` with :data:`BINS` thresholds: constant memory, summed across DDP ranks by
torchmetrics) and picks the threshold that maximises F1:

* ``"per_label"``: each label its own threshold, maximising that label's F1;
* ``"global"``: one threshold for every label, maximising the macro F1 (mean over the labels with positives).

A label without positives in the validation data (F1 0 at every threshold) keeps the default threshold. Among the
thresholds with the best F1, the middle one is chosen (the widest margin on both sides for a plateau).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryPrecisionRecallCurve, MultilabelPrecisionRecallCurve

__all__ = ["BINS", "ThresholdTuner", "best_f1_thresholds"]

BINS = 101
"""Candidate thresholds ``0.00, 0.01, ..., 1.00``."""

TuneMode = Literal["none", "global", "per_label"]


def best_f1_thresholds(
    precision: torch.Tensor, recall: torch.Tensor, candidates: torch.Tensor, mode: TuneMode, default: float
) -> list[float]:
    """The F1-maximising threshold per label (``"per_label"``) or for all labels (``"global"``).

    Args:
        precision: ``(L, T)`` precision of each label at each candidate threshold.
        recall: ``(L, T)`` recall.
        candidates: ``(T,)`` candidate thresholds, increasing.
        mode: ``"per_label"`` or ``"global"``.
        default: Threshold of labels whose F1 is 0 everywhere (e.g. no positives).

    Returns:
        ``L`` thresholds.

    Example:
        >>> candidates = torch.tensor([0.25, 0.5, 0.75])
        >>> precision = torch.tensor([[0.5, 1.0, 1.0], [0.6, 0.9, 1.0]])
        >>> recall = torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.9, 0.1]])
        >>> best_f1_thresholds(precision, recall, candidates, "per_label", default=0.5)
        [0.5, 0.5]
        >>> best_f1_thresholds(precision, recall, candidates, "global", default=0.5)
        [0.5, 0.5]
    """
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall), nan=0.0)  # (L, T)
    labels = len(f1)
    if mode == "global":
        useful = f1.amax(dim=1) > 0
        if not bool(useful.any()):
            return [default] * labels
        return [_middle_best(f1[useful].mean(dim=0), candidates)] * labels
    return [_middle_best(row, candidates) if float(row.max()) > 0 else default for row in f1]


def _middle_best(score: torch.Tensor, candidates: torch.Tensor) -> float:
    """The middle one of the candidates where ``score`` is at its maximum (within float rounding)."""
    best = torch.nonzero(score >= score.max() - 1e-6).flatten()
    return round(float(candidates[best[len(best) // 2]]), 6)


class ThresholdTuner(nn.Module):
    """Collects validation probabilities and targets as binned PR curves; :meth:`compute` gives F1-best thresholds.

    Args:
        num_labels: Number of labels (1 for a binary classifier).
        mode: ``"global"`` or ``"per_label"``.
        default: Threshold of labels without positives.

    Example:
        >>> tuner = ThresholdTuner(2, "per_label", default=0.5)
        >>> tuner.update(torch.tensor([[0.9, 0.2], [0.3, 0.8], [0.6, 0.1]]), torch.tensor([[1, 0], [0, 1], [1, 0]]))
        >>> tuner.compute()
        [0.46, 0.51]
    """

    def __init__(self, num_labels: int, mode: TuneMode, default: float) -> None:
        super().__init__()
        self.mode, self.default = mode, default
        self.curve: Metric = (
            MultilabelPrecisionRecallCurve(num_labels, thresholds=BINS)
            if num_labels > 1
            else BinaryPrecisionRecallCurve(thresholds=BINS)  # torchmetrics' multilabel curve needs 2 labels
        )

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: probabilities and 0/1 targets, both ``(N, L)``."""
        hard = (targets > 0.5).long()
        if isinstance(self.curve, BinaryPrecisionRecallCurve):
            self.curve.update(probs.float()[:, 0], hard[:, 0])
        else:
            self.curve.update(probs.float(), hard)

    def compute(self) -> list[float]:
        """The thresholds (every DDP rank gets the same: the curve's counts are summed across ranks)."""
        precision, recall, candidates = cast("tuple[torch.Tensor, torch.Tensor, torch.Tensor]", self.curve.compute())
        if precision.ndim == 1:  # one label
            precision, recall = precision[None], recall[None]
        return best_f1_thresholds(precision[:, :-1], recall[:, :-1], candidates, self.mode, self.default)

    def reset(self) -> None:
        """Forget the collected batches."""
        self.curve.reset()
