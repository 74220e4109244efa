"""``SegmentationDataset``: an image and its mask, decoded and transformed together, as ``(tensor, mask)``.

The mask is a ``int64`` tensor of class indices ``(H, W)`` (``ignore_index`` where no class applies); unlabelled
(predict) samples give their index instead, so a writer can look the file up in ``DataModule.predict_paths``.
Augmentations are seeded by (seed, epoch, rank, worker), as for the classification datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch

from lit_transfer.data.dataset import _AugmentedDataset
from lit_transfer.data.decode import load_image
from lit_transfer.data.masks import MaskError, load_mask

__all__ = ["SegmentationDataset"]


class SegmentationDataset(_AugmentedDataset):
    """Image files and their masks.

    Args:
        paths: Image files.
        masks: The mask file of each image, or ``None`` for unlabelled data.
        transform: Pipeline applied to the ``uint8`` HWC image and its mask together.
        in_chans: Channels to decode the images to (1 or 3).
        seed: Base augmentation seed.

    Raises:
        BadImageError: From ``__getitem__`` when an image cannot be decoded.
        MaskError: From ``__getitem__`` when a mask cannot be decoded or has another size than its image.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        masks: Sequence[str | os.PathLike] | None = None,
        transform: A.Compose | None = None,
        in_chans: int = 3,
        seed: int = 0,
    ) -> None:
        if masks is not None and len(masks) != len(paths):
            raise ValueError(f"`masks` has {len(masks)} entries but `paths` has {len(paths)}.")
        self.paths = [os.fspath(p) for p in paths]
        self.masks = None if masks is None else [os.fspath(m) for m in masks]
        self.in_chans = in_chans
        super().__init__(transform, None, seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = load_image(self.paths[index], self.in_chans)
        if self.masks is None:
            out = self.transform(image=image)["image"] if self.transform is not None else image
            return out, index
        mask = load_mask(self.masks[index])
        if mask.shape != image.shape[:2]:
            raise MaskError(
                f"Mask {self.masks[index]!r} is {mask.shape[1]}x{mask.shape[0]} px but its image"
                f" {self.paths[index]!r} is {image.shape[1]}x{image.shape[0]} px; a mask must cover its image pixel"
                " for pixel."
            )
        if self.transform is None:
            return image, torch.from_numpy(mask.astype(np.int64))
        out = self.transform(image=image, mask=mask)
        return out["image"], torch.as_tensor(out["mask"]).long()
