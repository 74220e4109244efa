"""Classification metrics per split, from torchmetrics (reduced across DDP ranks by torchmetrics itself)."""

from __future__ import annotations

from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

__all__ = ["classification_metrics"]


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
