"""The segmenter's losses: cross-entropy, Dice and focal (segmentation-models-pytorch's), alone or summed.

``loss`` names one term or a sum of terms joined by ``+`` (``"ce"``, ``"dice"``, ``"focal"``, ``"ce+dice"``,
``"focal+dice"``, ...). Every term skips the pixels whose target is ``ignore_index`` and weighs class ``c`` by
``class_weights[c]`` when given. Cross-entropy is torch's; Dice and focal are smp's ``DiceLoss`` and ``FocalLoss``
in ``multiclass`` mode (Dice on the softmax over classes, averaged over the classes present in the batch's targets;
focal as a one-vs-rest sigmoid focal loss per class, ``gamma=2``). The sum is computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn

from lit_transfer.errors import check_int, is_number

__all__ = ["LOSS_TERMS", "SegmentationLoss", "check_loss_arguments", "loss_terms"]

LOSS_TERMS: tuple[str, ...] = ("ce", "dice", "focal")
"""The terms a segmentation ``loss`` sums."""


def loss_terms(loss: str) -> list[str]:
    """The terms of a ``loss`` spec, checked (``ValueError`` naming the argument and listing the terms).

    Example:
        >>> loss_terms("ce+dice")
        ['ce', 'dice']
        >>> loss_terms("ce+iou")
        Traceback (most recent call last):
        ...
        ValueError: `loss` must be one of 'ce', 'dice', 'focal' or a sum of them joined by '+' (e.g. 'ce+dice'), \
got 'ce+iou'.
    """
    terms = [term.strip() for term in loss.split("+")] if isinstance(loss, str) else []
    if not terms or any(term not in LOSS_TERMS for term in terms) or len(set(terms)) != len(terms):
        raise ValueError(
            f"`loss` must be one of {', '.join(map(repr, LOSS_TERMS))} or a sum of them joined by '+' (e.g."
            f" 'ce+dice'), got {loss!r}."
        )
    return terms


def check_loss_arguments(loss: str, num_classes: int, ignore_index: int, class_weights: Sequence[float] | None) -> None:
    """Refuse a loss spec, ``ignore_index`` or ``class_weights`` that do not fit ``num_classes``.

    Example:
        >>> check_loss_arguments("ce", 3, ignore_index=1, class_weights=None)
        Traceback (most recent call last):
        ...
        ValueError: `ignore_index` 1 is a class index (0..2); it must lie outside them (255 by default) so that no \
class is ignored.
    """
    loss_terms(loss)
    check_int("ignore_index", ignore_index, expected="an integer (255 by default)")
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"`ignore_index` {ignore_index} is a class index (0..{num_classes - 1}); it must lie outside them (255 by"
            " default) so that no class is ignored."
        )
    if class_weights is None:
        return
    values = list(class_weights)
    numbers = all(is_number(v) and v >= 0 for v in values)
    if len(values) != num_classes or not numbers or not any(v > 0 for v in values):
        raise ValueError(
            f"`class_weights` must hold {num_classes} non-negative numbers (one per class, not all 0), got"
            f" {class_weights!r}."
        )


class SegmentationLoss(nn.Module):
    """The sum of the chosen terms on logits ``(N, C, H, W)`` and class indices ``(N, H, W)``.

    Args:
        loss: One term or a sum (see the module docstring).
        ignore_index: Target value of the pixels no term counts.
        class_weights: A weight per class for every term, or ``None``.

    Example:
        >>> criterion = SegmentationLoss("ce+dice", ignore_index=255)
        >>> logits = torch.zeros(1, 2, 2, 2)
        >>> round(float(criterion(logits, torch.tensor([[[0, 1], [255, 1]]]))), 4)  # ln 2 + mean(1 - 0.4, 1 - 4/7)
        1.2074
    """

    weight: torch.Tensor | None

    def __init__(self, loss: str = "ce", ignore_index: int = 255, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.terms = loss_terms(loss)
        self.ignore_index = int(ignore_index)
        weights = [float(w) for w in class_weights] if class_weights is not None else None
        self.register_buffer("weight", torch.tensor(weights) if weights is not None else None, persistent=False)
        self.dice = DiceLoss("multiclass", ignore_index=self.ignore_index, class_weights=weights)
        self.focal = FocalLoss("multiclass", ignore_index=self.ignore_index, class_weights=weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar)."""
        logits = logits.float()
        total = logits.new_zeros(())
        for term in self.terms:
            if term == "ce":
                total = total + self.cross_entropy(logits, targets)
            elif term == "dice":
                total = total + self.dice(logits, targets)
            else:
                total = total + self.focal(logits, targets)
        return total

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Torch's (weighted) mean cross-entropy over the pixels not ignored; 0, not NaN, when every pixel is."""
        summed = nn.functional.cross_entropy(
            logits, targets, weight=self.weight, ignore_index=self.ignore_index, reduction="sum"
        )
        valid = targets != self.ignore_index
        weights = valid.float() if self.weight is None else self.weight[torch.where(valid, targets, 0)] * valid
        count = weights.sum()
        return summed / count.clamp_min(1e-12)
