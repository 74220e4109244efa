"""SegmentationMaskWriter: write a segmenter's ``predict`` results as one mask PNG per image, at the image's size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from typing_extensions import override

from lit_transfer.callbacks.report.overlays import mask_image, overlay, save_png
from lit_transfer.data.decode import load_image
from lit_transfer.data.masks import image_size
from lit_transfer.data.segmentation_transforms import restore_size
from lit_transfer.errors import check_int, is_number

__all__ = ["SegmentationMaskWriter"]


class SegmentationMaskWriter(BasePredictionWriter):
    """Write each predicted mask as a PNG of class indices at its image's own size, and a few colour overlays.

    ``predict_step`` gives class indices at the model's input size (the letterboxed image); each is cropped to the
    image's part of the letterbox and resized to the image's own size with nearest-neighbour
    (:func:`~lit_transfer.data.segmentation_transforms.restore_size`), then saved as
    ``<output_dir>/masks/<name>.png``: a palette PNG whose stored values are the class indices (Pillow's
    ``np.asarray(Image.open(path))`` gives them back; viewers show the Pascal VOC colours). The first ``overlays``
    images also get ``<output_dir>/overlays/<name>.png``, the image with the predicted classes' colours blended in.
    ``<name>`` is the image's path relative to the folder holding every predicted image, without its extension.
    Under DDP every rank writes the masks of its own images.

    Args:
        output_dir: Folder for ``masks/`` and ``overlays/``; default: the Trainer's ``default_root_dir``.
        overlays: How many overlays to write (0 for none).
        alpha: Weight of the class colours in the overlays.

    Attributes:
        written: The mask files written by this process in the last ``predict``.

    Example::

        trainer = Trainer(callbacks=[SegmentationMaskWriter("out/predict", overlays=4)])
        trainer.predict(segmenter, datamodule=datamodule, return_predictions=False)
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, overlays: int = 8, alpha: float = 0.5) -> None:
        super().__init__(write_interval="batch")
        check_int("overlays", overlays, minimum=0)
        if not is_number(alpha) or not 0 < alpha <= 1:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha!r}.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.overlays = overlays
        self.alpha = float(alpha)
        self.written: list[Path] = []
        self._base = ""

    def resolve_dir(self, trainer: Trainer) -> Path:
        """The output folder for ``trainer``: ``output_dir`` or the Trainer's ``default_root_dir``."""
        return self.output_dir or Path(trainer.default_root_dir)

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.written = []
        paths = _predict_paths(trainer)
        folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
        self._base = os.path.commonpath(folders) if folders else ""

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        preds = prediction.get("preds") if isinstance(prediction, dict) else None
        if not isinstance(preds, torch.Tensor) or preds.ndim != 3:
            raise ValueError(
                "SegmentationMaskWriter needs `predict_step` to return {'preds': class indices (N, H, W)}, as"
                f" TransferSegmenter's does; got {type(prediction).__name__}. Use PredictionCSVWriter for classifiers."
            )
        paths = _predict_paths(trainer)
        start = len(self.written)
        indices = list(batch_indices) if batch_indices else list(range(start, start + len(preds)))
        out = self.resolve_dir(trainer)
        size = (int(preds.shape[1]), int(preds.shape[2]))
        ignore = int(getattr(pl_module, "hparams", {}).get("ignore_index", 255))
        for index, pred in zip(indices, preds.detach().cpu().numpy()):
            source = paths[index] if index < len(paths) else None
            name = self._name(source, index)
            original = (image_size(source) if source is not None else None) or size
            mask = restore_size(pred.astype(np.uint16 if pred.max() > 255 else np.uint8), original, size)
            target = out / "masks" / f"{name}.png"
            save_png(mask_image(mask), target)
            self.written.append(target)
            if source is not None and index < self.overlays:
                blended = overlay(load_image(source, 3), mask, ignore_index=ignore, alpha=self.alpha)
                save_png(Image.fromarray(blended), out / "overlays" / f"{name}.png")

    def _name(self, source: str | None, index: int) -> str:
        if source is None:
            return f"{index:06d}"
        relative = os.path.relpath(os.path.abspath(source), self._base) if self._base else os.path.basename(source)
        return os.path.splitext(relative)[0]

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        count = len(self.written)
        if trainer.world_size > 1:  # a DistributedSampler pads with repeats: the same file written twice, counted once
            count = min(
                len(_predict_paths(trainer)),
                int(trainer.strategy.reduce(torch.tensor(count, device=pl_module.device), "sum")),
            )
        rank_zero_info(f"Predicted masks of {count} images written to {self.resolve_dir(trainer) / 'masks'}")


def _predict_paths(trainer: Trainer) -> list[str]:
    paths = getattr(getattr(trainer, "datamodule", None), "predict_paths", None)
    return [str(p) for p in paths] if paths else []
