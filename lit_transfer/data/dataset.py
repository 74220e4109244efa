"""Map-style datasets: decoded image → Albumentations pipeline → ``(tensor, target)``.

``target`` is the class index for labelled data (a ``float32`` row of values for multi-label and regression
targets) and the sample index for unlabelled (predict) data, so a prediction writer can look the file up in
``DataModule.predict_paths``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lit_transfer.data.decode import load_image
from lit_transfer.data.samplers import epoch_seed


class _AugmentedDataset(Dataset):
    """Shared seeding of the pipeline: per (seed, epoch, rank) in the main process, per worker in workers."""

    def __init__(self, transform: A.Compose | None, labels: Sequence[Any] | None, seed: int) -> None:
        self.transform = transform
        self.labels = None if labels is None else _targets(labels)
        self.seed = int(seed)
        self.epoch = 0
        self.seed_transform(epoch_seed(self.seed, 0, 0))

    def seed_transform(self, seed: int) -> None:
        """Reseed the Albumentations pipeline (``Compose.set_random_seed``)."""
        if self.transform is not None:
            self.transform.set_random_seed(int(seed) % 2**32)

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Seed the pipeline from (seed, epoch, rank); used as is when the loader has no workers."""
        self.epoch = int(epoch)
        self.seed_transform(epoch_seed(self.seed, self.epoch, rank))

    def _apply(self, image: np.ndarray, index: int) -> tuple[torch.Tensor | np.ndarray, Any]:
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        target = index if self.labels is None else self.labels[index]
        return image, target


def _targets(labels: Sequence[Any]) -> list[int] | np.ndarray:
    """Class indices as a list of ``int``; rows of target values (multi-label, regression) as ``float32`` ``(N, K)``."""
    if len(labels) and np.ndim(labels[0]) > 0:
        return np.asarray(labels, dtype=np.float32).reshape(len(labels), -1)
    return [int(label) for label in labels]


class ImageDataset(_AugmentedDataset):
    """Image files decoded with :func:`~lit_transfer.data.decode.load_image`.

    Args:
        paths: Image files.
        labels: Class index per file, a row of target values per file (multi-hot labels, regression targets: the
            target is then a ``float32`` array), or ``None`` for unlabelled data (the target is then the index).
        transform: Pipeline applied to the ``uint8`` HWC image.
        in_chans: Channels to decode to (1 or 3).
        seed: Base augmentation seed.

    Raises:
        BadImageError: From ``__getitem__`` when a file cannot be decoded; the message names the file.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[Any] | None = None,
        transform: A.Compose | None = None,
        in_chans: int = 3,
        seed: int = 0,
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"`labels` has {len(labels)} entries but `paths` has {len(paths)}.")
        self.paths = [os.fspath(p) for p in paths]
        self.in_chans = in_chans
        super().__init__(transform, labels, seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, Any]:
        return self._apply(load_image(self.paths[index], self.in_chans), index)


class ArrayDataset(_AugmentedDataset):
    """In-memory ``uint8`` images, resized on access and expanded to ``in_chans`` channels.

    Args:
        images: ``(N, H, W)`` grayscale or ``(N, H, W, C)`` array, ``uint8``.
        labels: Class index per image, or ``None``.
        transform: Pipeline applied to the ``uint8`` HWC image.
        in_chans: Output channels (1 or 3); grayscale is replicated, RGB averaged for 1.
        image_size: Square size to resize to before the pipeline (``None`` keeps the stored size).
        seed: Base augmentation seed.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | None = None,
        transform: A.Compose | None = None,
        in_chans: int = 3,
        image_size: int | None = None,
        seed: int = 0,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"`images` must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}.")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"`labels` has {len(labels)} entries but `images` has {len(images)}.")
        self.images = images
        self.in_chans = in_chans
        self.image_size = image_size
        super().__init__(transform, labels, seed)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        """The stored image ``index`` at :attr:`image_size` with ``in_chans`` channels, before the pipeline."""
        image = self.images[index]
        if self.image_size is not None and image.shape[:2] != (self.image_size, self.image_size):
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != self.in_chans:
            image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            image = image.reshape(*image.shape[:2], self.in_chans)
        return np.ascontiguousarray(image)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        return self._apply(self.image(index), index)
