"""Mixup and CutMix with dense targets: multi-hot labels, binary labels, regression values.

timm's :class:`~timm.data.Mixup` mixes a batch of images with the batch flipped (``mode="batch"``: one ``lam`` per
batch, drawn from ``Beta(alpha, alpha)``, CutMix's ``lam`` corrected to the pasted area) and turns class indices into
mixed one-hot targets. :class:`DenseMixup` keeps timm's image mixing and mixes targets that are already dense with
the same ``lam`` and pairing: ``lam * t + (1 - lam) * t.flip(0)``, for multi-hot labels as for real values.
"""

from __future__ import annotations

import torch
from timm.data import Mixup

__all__ = ["DenseMixup"]


class DenseMixup(Mixup):
    """timm's Mixup/CutMix on images; dense targets ``(N, K)`` mixed linearly with the same ``lam`` and pairing.

    Args:
        mixup_alpha: Mixup alpha (0 disables mixup).
        cutmix_alpha: CutMix alpha (0 disables CutMix).
        label_smoothing: Smoothing of multi-hot labels towards 0.5, ``t * (1 - s) + s / 2``, before mixing (0 for
            regression).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> mix = DenseMixup(mixup_alpha=1.0)
        >>> images, targets = torch.rand(4, 3, 8, 8), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
        >>> mixed_images, mixed = mix(images.clone(), targets)
        >>> lam = float(mixed[0, 0])  # the first row is mixed with the last, whose targets are 0
        >>> torch.allclose(mixed, lam * targets + (1 - lam) * targets.flip(0))
        True
    """

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Mix ``x`` in place with ``x.flip(0)`` (timm), ``target`` with the same ``lam``; the batch must be even."""
        if len(x) % 2:
            raise ValueError(f"Mixup pairs the batch with its reverse: the batch size must be even, got {len(x)}.")
        lam = float(self._mix_batch(x))  # timm's batch mode: the image mixing Mixup.__call__ does
        dense = target.float() * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return x, dense * lam + dense.flip(0) * (1.0 - lam)
