"""Mixup and CutMix in ``TransferClassifier.training_step``: the network sees mixed images and the loss is the
soft-target cross-entropy of the mixed labels, not the plain cross-entropy of the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lit_transfer import TransferClassifier

N, CLASSES = 8, 3


def _model(**kwargs: float) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier(
        "test_resnet", num_classes=CLASSES, pretrained=False, freeze="full_fine_tune", **kwargs
    ).train()


def _batch(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 1])[:n]  # label i differs from label n - 1 - i, its mixing partner
    return torch.randn(n, 3, 16, 16, generator=g), labels


def _step(model: TransferClassifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``training_step`` on a copy of ``x`` (mixup works in place); the loss and the input the backbone saw."""
    seen: list[torch.Tensor] = []
    hook = model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    np.random.seed(0)  # timm's Mixup draws lambda and the CutMix box from numpy
    try:
        with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached: logging is skipped
            loss = model.training_step((x.clone(), y), 0)
    finally:
        hook.remove()
    [images] = seen
    return loss.detach(), images


def _soft_targets(y: torch.Tensor, lam: float, smoothing: float) -> torch.Tensor:
    off = smoothing / CLASSES
    one_hot = nn.functional.one_hot(y, CLASSES).float() * (1 - smoothing) + off
    return lam * one_hot + (1 - lam) * one_hot.flip(0)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (-targets * logits.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_images_and_labels(smoothing: float) -> None:
    model = _model(mixup_alpha=1.0, label_smoothing=smoothing)
    x, y = _batch()
    loss, seen = _step(model, x, y)
    # the backbone saw lam * x + (1 - lam) * x.flip(0), one lam for the batch (least squares on every pixel)
    a, b = (x - x.flip(0)).flatten(), (seen - x.flip(0)).flatten()
    lam = float(a @ b / (a @ a))
    assert 0.05 < lam < 0.95, lam  # a real mix with this seed, not one image of the pair
    torch.testing.assert_close(seen, lam * x + (1 - lam) * x.flip(0), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        logits = model(seen)
        plain = nn.functional.cross_entropy(model(x), y, label_smoothing=smoothing)
    # the loss is the cross-entropy against lam * label + (1 - lam) * paired label (each pair of different classes)
    torch.testing.assert_close(
        loss, _soft_cross_entropy(logits, _soft_targets(y, lam, smoothing)), rtol=1e-4, atol=1e-5
    )
    assert abs(float(loss - plain)) > 1e-3  # not the plain cross-entropy of the unmixed batch
    assert abs(float(loss - nn.functional.cross_entropy(logits, y, label_smoothing=smoothing))) > 1e-3


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area() -> None:
    model = _model(cutmix_alpha=1.0)
    x, y = _batch()
    loss, seen = _step(model, x, y)
    pasted = (seen == x.flip(0)).all(dim=0).all(dim=0)  # (H, W): pixels taken from the paired image
    kept = (seen == x).all(dim=0).all(dim=0)
    assert bool((pasted | kept).all()) and bool(pasted.any()) and bool(kept.any())
    rows, cols = pasted.nonzero(as_tuple=True)
    box = pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert bool(box.all()) and int(box.numel()) == int(pasted.sum())  # one rectangle
    lam = 1 - float(pasted.float().mean())  # the label weight follows the box's area
    with torch.no_grad():
        logits = model(seen)
    torch.testing.assert_close(loss, _soft_cross_entropy(logits, _soft_targets(y, lam, 0.0)), rtol=1e-4, atol=1e-5)
    assert abs(float(loss - nn.functional.cross_entropy(logits, y))) > 1e-3


def test_odd_batch_is_not_mixed() -> None:
    """timm's Mixup pairs each image with its mirror in the batch: an odd batch trains on plain (smoothed) labels."""
    model = _model(mixup_alpha=1.0, label_smoothing=0.1)
    x, y = _batch(N - 1)
    loss, seen = _step(model, x, y)
    assert torch.equal(seen, x)
    with torch.no_grad():
        torch.testing.assert_close(loss, nn.functional.cross_entropy(model(x), y, label_smoothing=0.1))
