"""The segmenter's metrics: per-class IoU, mean IoU, pixel accuracy and Dice, from one pixel confusion matrix.

A torchmetrics ``MulticlassConfusionMatrix`` counts (true class, predicted class) over every pixel whose target is
not ``ignore_index`` and sums the counts across DDP processes; the scores are read from the counts at the end of
an epoch (:func:`segmentation_scores`), the way mmsegmentation and torchgeo's benchmarks read them:

* ``iou_<class>``: ``TP / (TP + FP + FN)`` of each class (NaN for a class neither in the targets nor predicted);
* ``miou``: the mean of the per-class IoUs over the classes that are not NaN;
* ``dice``: the mean over the same classes of ``2 TP / (2 TP + FP + FN)`` (the per-class F1 score);
* ``pixel_acc``: correctly classified pixels over all counted pixels.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["PixelConfusion", "segmentation_scores"]


class PixelConfusion(MulticlassConfusionMatrix):
    """Pixel counts of (true, predicted) class from logits ``(N, C, H, W)`` and targets ``(N, H, W)``.

    Args:
        num_classes: Number of classes.
        ignore_index: Target value of pixels that are not counted.

    Example:
        >>> confusion = PixelConfusion(2, ignore_index=255)
        >>> logits = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]]])  # predicts 0, 1, 1, 1
        >>> confusion.update(logits, torch.tensor([[[0, 0], [255, 1]]]))
        >>> confusion.compute().tolist()
        [[1, 1], [0, 1]]
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:  # type: ignore[override]
        """Count one batch: the class of highest score at each pixel against its target."""
        super().update(logits.argmax(dim=1), targets)


def segmentation_scores(confusion: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """``miou``, ``dice``, ``pixel_acc`` and ``iou_<class>`` from a pixel confusion matrix (rows true classes).

    Example:
        >>> scores = segmentation_scores(torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), ["sky", "road", "car"])
        >>> {k: round(v, 4) for k, v in scores.items() if k != "iou_car"}
        {'miou': 0.775, 'dice': 0.873, 'pixel_acc': 0.875, 'iou_sky': 0.75, 'iou_road': 0.8}
        >>> scores["iou_car"]  # neither present nor predicted
        nan
    """
    counts = confusion.double().cpu()
    true_positives = counts.diagonal()
    false_positives = counts.sum(dim=0) - true_positives
    false_negatives = counts.sum(dim=1) - true_positives
    union = true_positives + false_positives + false_negatives
    iou = torch.where(union > 0, true_positives / union.clamp_min(1), torch.nan)
    dice = torch.where(union > 0, 2 * true_positives / (union + true_positives).clamp_min(1), torch.nan)
    total = float(counts.sum())
    scores = {
        "miou": _nanmean(iou),
        "dice": _nanmean(dice),
        "pixel_acc": float(true_positives.sum()) / total if total else math.nan,
    }
    scores.update({f"iou_{name}": float(value) for name, value in zip(class_names, iou.tolist())})
    return scores


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else math.nan
