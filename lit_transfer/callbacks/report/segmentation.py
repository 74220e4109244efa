"""The test report of a segmentation model in :class:`~lit_transfer.callbacks.RunReport`.

From the per-pixel scores the module computed itself (captured by the report's forward hook, as for the confusion
matrix) and the test masks: a pixel confusion matrix (torchmetrics, summed over a DDP run, ``ignore_index`` left
out), read as each class's IoU and Dice, written as ``per_class_iou.csv`` and drawn as ``per_class_iou.png``; and
``segmentation_samples.png``, a grid of the first test images with their true and predicted masks in colour
(image / truth / prediction per row; rank zero's images under DDP).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_transfer.callbacks.report.confusion import TestConfusion, split_batch
from lit_transfer.callbacks.report.files import _plot, write_csv
from lit_transfer.callbacks.report.overlays import overlay
from lit_transfer.models.segmentation_metrics import segmentation_scores
from lit_transfer.tasks import class_names_of

__all__ = ["TestSegmentation", "iou_rows", "plot_per_class_iou", "plot_samples"]


class TestSegmentation(TestConfusion):
    """Pixel counts and a few samples of a segmentation model's ``test`` (masks ``(N, H, W)`` as targets).

    Args:
        samples: How many test images the sample grid shows.
    """

    def __init__(self, samples: int = 6) -> None:
        super().__init__()
        self.samples = samples
        self.pixels: MulticlassConfusionMatrix | None = None
        self.shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def start(self, pl_module: LightningModule) -> None:
        """Begin a test run: clear the counts and samples, capture the module's forward outputs."""
        super().start(pl_module)
        self.pixels, self.shown = None, []

    def update(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any) -> None:
        """Count one test batch's pixels (the module's scores against the masks) and keep the first samples."""
        captured, self._captured = self._captured, None
        x, masks = split_batch(batch)
        if masks is None or masks.ndim != 3 or not isinstance(x, torch.Tensor):
            self._warn_once("masks", "test batches carry no masks (N, H, W); no per-class IoU is computed.")
            return
        scores = captured if captured is not None and captured.ndim == 4 and len(captured) == len(masks) else None
        if scores is None:
            with torch.no_grad():
                scores = pl_module(x)
            self._captured = None
        hparams = getattr(pl_module, "hparams", {})
        if self.pixels is None:
            ignore = int(hparams.get("ignore_index", 255))
            self.pixels = MulticlassConfusionMatrix(scores.shape[1], ignore_index=ignore, validate_args=False)
            self.pixels = self.pixels.to(scores.device)
        predicted = scores.argmax(dim=1)
        self.pixels.update(predicted, masks.to(scores.device).long())
        if trainer.is_global_zero and len(self.shown) < self.samples:
            images = _displayable(x, getattr(pl_module, "data_config", None))
            for image, mask, pred in zip(images, masks.cpu().numpy(), predicted.cpu().numpy()):
                if len(self.shown) < self.samples:
                    self.shown.append((image, mask, pred))

    def compute(self, trainer: Trainer, device: torch.device) -> torch.Tensor | None:  # type: ignore[override]
        """The pixel counts (rows true classes, on the CPU), summed over the processes; every rank calls."""
        if self.pixels is None:
            return None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            return self.pixels.compute().long().cpu()

    def write(self, out: Path, counts: torch.Tensor, pl_module: LightningModule, plots: bool) -> list[Path]:
        """``per_class_iou.csv`` and, with ``plots``, ``per_class_iou.png`` and ``segmentation_samples.png``."""
        names = class_names_of(pl_module, int(counts.shape[0]))
        rows = iou_rows(counts, names)
        written = [write_csv(out / "per_class_iou.csv", rows)]
        if plots:
            written.append(_plot(plot_per_class_iou, rows, path=out / "per_class_iou.png"))
            if self.shown:
                ignore = int(getattr(pl_module, "hparams", {}).get("ignore_index", 255))
                written.append(_plot(plot_samples, self.shown, ignore, path=out / "segmentation_samples.png"))
        return written


def _displayable(x: torch.Tensor, data_config: Any) -> list[np.ndarray]:
    """Normalised images ``(N, C, H, W)`` back to ``uint8`` HWC RGB with the model's mean and std."""
    images = x.detach().float().cpu()
    channels = images.shape[1]
    if isinstance(data_config, dict) and data_config.get("mean") and data_config.get("std"):
        mean = torch.tensor(data_config["mean"][:channels]).view(1, -1, 1, 1)
        std = torch.tensor(data_config["std"][:channels]).view(1, -1, 1, 1)
        images = images * std + mean
    array = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3] for a in array]


def iou_rows(counts: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """One row per class: ``class``, ``iou``, ``dice``, ``true_pixels``, ``predicted_pixels`` (NaN: absent).

    Example:
        >>> rows = iou_rows(torch.tensor([[3, 1], [0, 4]]), ["sky", "road"])
        >>> [(r["class"], round(r["iou"], 3), r["true_pixels"]) for r in rows]
        [('sky', 0.75, 4), ('road', 0.8, 4)]
    """
    scores = segmentation_scores(counts, names)
    counts = counts.double()
    true_positives = counts.diagonal()
    rows = []
    for index, name in enumerate(names):
        union = float(counts[index].sum() + counts[:, index].sum() - true_positives[index])
        rows.append(
            {
                "class": name,
                "iou": scores[f"iou_{name}"],
                "dice": 2 * float(true_positives[index]) / (union + float(true_positives[index])) if union else np.nan,
                "true_pixels": int(counts[index].sum()),
                "predicted_pixels": int(counts[:, index].sum()),
            }
        )
    return rows


def plot_per_class_iou(rows: list[dict[str, Any]], path: Path) -> Path:
    """A bar per class of its test IoU, the mean IoU as a dashed line."""
    from lit_transfer import plots

    names = [str(r["class"]) for r in rows]
    values = [0.0 if np.isnan(r["iou"]) else float(r["iou"]) for r in rows]
    present = [v for r, v in zip(rows, values) if not np.isnan(r["iou"])]
    fig, axes = plots._figure(1, 1, width=max(4.0, 0.6 * len(names) + 2), row_height=3.2)
    ax = axes[0][0]
    ax.bar(range(len(names)), values, color="tab:blue")
    if present:
        mean = sum(present) / len(present)
        ax.axhline(mean, color="grey", linestyle="--", linewidth=1, label=f"mIoU {mean:.3f}")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xticks(
        range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("test IoU")
    ax.set_title("Per-class IoU (test)", fontsize="small")
    return plots._save(fig, path)


def plot_samples(shown: list[tuple[np.ndarray, np.ndarray, np.ndarray]], ignore_index: int, path: Path) -> Path:
    """A row per test image: the image, its true mask and the predicted mask, each blended in colour.

    Pixels the metrics do not score (``ignore_index`` in the true mask, the letterbox's padding included) are left
    uncoloured in the prediction too.
    """
    from lit_transfer import plots

    fig, axes = plots._figure(len(shown), 3, width=7.5, row_height=2.5)
    for row, (image, truth, predicted) in zip(axes, shown):
        scored = np.where(truth == ignore_index, ignore_index, predicted)  # the letterbox's padding left uncoloured
        panels = (image, overlay(image, truth, ignore_index), overlay(image, scored, ignore_index))
        for ax, panel, title in zip(row, panels, ("image", "truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(title, fontsize="small")
            ax.axis("off")
    return plots._save(fig, path)
