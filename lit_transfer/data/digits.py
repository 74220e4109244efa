"""``DigitsDataModule``: scikit-learn's bundled handwritten digits as a real, offline transfer-learning task.

The 1,797 8x8 scans (values 0-16) ship with scikit-learn, so tests and quick starts need no download. The
images are kept in memory as ``uint8`` arrays and upsampled on access to ``image_size`` with ``in_chans``
channels.

Splits:

- **test**: a stratified ``test_fraction`` (25 %) of all 1,797 scans, drawn with ``split_seed``. It does not
  depend on ``classes``, ``shots_per_class`` or ``seed``, so every experiment is scored on the same scans, and a
  class-subset task's test set is the fixed test set restricted to its classes.
- **val**: a stratified ``val_fraction`` of the remaining scans (``split_seed`` too).
- **train**: the rest, optionally reduced to ``shots_per_class`` scans per class drawn with ``seed``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from lit_transfer.data.base import BaseImageDataModule
from lit_transfer.data.dataset import ArrayDataset
from lit_transfer.data.pipeline import TransformArg
from lit_transfer.data.splits import few_shot, stratified_split
from lit_transfer.errors import check_int

ALL_DIGITS: tuple[int, ...] = tuple(range(10))


def digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scans as ``uint8`` ``(N, 8, 8)`` (0-16 scaled to 0-255) and their labels (the caller's copies)."""
    images, labels = _read_digits()
    return images.copy(), labels.copy()


@functools.cache
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The scans and labels, parsed from scikit-learn's CSV once per process (each DataModule's ``setup`` asks)."""
    from sklearn.datasets import load_digits  # here, not at import: scikit-learn would slow every command's start

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


class DigitsDataModule(BaseImageDataModule):
    """The scikit-learn digits, with class subsets, few-shot sampling and a fixed test split.

    ``classes=[0, 1, 2, 3, 4]`` is a source task and ``[5, 6, 7, 8, 9]`` a target task; labels are remapped to
    ``0..k-1`` in the order given and ``class_names`` are the digits as strings. Everything is in memory, so the
    default ``num_workers`` is 0 (workers would only add start-up time); training order and augmentations are
    seeded from (seed, epoch) as in the file modules.

    Args:
        classes: Digits to use (distinct values in 0-9), in label order.
        shots_per_class: Training scans per class (``None``: all), drawn with ``seed``.
        val_fraction: Stratified fraction of the non-test scans used for validation.
        test_fraction: Stratified fraction of all scans held out for testing.
        split_seed: Seed of the test and validation splits (fixed by default).
        image_size: Square size the 8x8 scans are upsampled to (default 32); overrides the data config size.
        train_transform: Preset or pipeline; default ``"none"`` (``light`` flips, which changes some digits).
        **kwargs: The other arguments of :class:`~lit_transfer.data.base.BaseImageDataModule` (``batch_size``,
            ``num_workers`` (default 0 here), ``seed`` (also of the few-shot draw), ``data_config`` (mean/std,
            interpolation, crop_pct), ``in_chans`` (3: grayscale replicated, or 1), ...).

    Example:
        >>> dm = DigitsDataModule(classes=[5, 6, 7, 8, 9], shots_per_class=5, batch_size=8)
        >>> dm.num_classes, dm.class_names
        (5, ['5', '6', '7', '8', '9'])
        >>> dm.setup("fit")
        >>> len(dm.train_dataset)
        25
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), int(labels.max()) < 5
        ((8, 3, 32, 32), True)
    """

    _default_workers = 0

    def __init__(
        self,
        classes: Sequence[int] = ALL_DIGITS,
        shots_per_class: int | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        image_size: int | None = 32,
        train_transform: TransformArg | None = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, train_transform=train_transform, **kwargs)
        classes = [int(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes) or not set(classes) <= set(ALL_DIGITS):
            raise ValueError(f"`classes` must be at least 2 distinct digits in 0-9, got {classes!r}.")
        if shots_per_class is not None:
            check_int("shots_per_class", shots_per_class, minimum=1, expected="a positive int or None")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        self.classes = classes
        self.shots_per_class = shots_per_class
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_seed = int(split_seed)
        self.class_names = [str(c) for c in classes]
        self.split_indices: dict[str, list[int]] = {}

    def _splits(self) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
        images, digits = digit_arrays()
        rest, test = stratified_split(digits, self.test_fraction, self.split_seed)
        rest_train, rest_val = stratified_split(digits[rest], self.val_fraction, self.split_seed)
        train = [rest[i] for i in rest_train]
        val = [rest[i] for i in rest_val]
        wanted = set(self.classes)
        splits = {name: [i for i in idx if digits[i] in wanted] for name, idx in (("train", train), ("val", val))}
        splits["test"] = [i for i in test if digits[i] in wanted]
        if self.shots_per_class is not None:
            splits["train"] = few_shot(digits, splits["train"], self.shots_per_class, self.seed)
        return images, digits, splits

    def setup(self, stage: str | None = None) -> None:
        """Build the in-memory train/val/test datasets (``predict`` uses the test scans)."""
        images, digits, self.split_indices = self._splits()
        remap = {d: i for i, d in enumerate(self.classes)}
        size = self.resolved_config.size[0]
        for split, idx in self.split_indices.items():
            if not idx:
                continue
            transform = self.build_train_transform() if split == "train" else self.build_eval_transform()
            labels = [remap[int(d)] for d in digits[idx]]
            dataset = ArrayDataset(images[idx], labels, transform, self.in_chans, image_size=size, seed=self.seed)
            setattr(self, f"{split}_dataset", dataset)
        self.predict_dataset = ArrayDataset(
            images[self.split_indices["test"]], None, self.build_eval_transform(), self.in_chans, size, self.seed
        )

    def write_image_folder(self, path: str | os.PathLike) -> str:
        """Write the current splits as PNG files: ``path/{train,val,test}/<digit>/<index>.png``.

        Images are written at ``image_size`` as 8-bit grayscale, upsampled exactly as in memory, so an
        :class:`~lit_transfer.data.image_folder.ImageFolderDataModule` on ``path`` sees the same pixels. File names
        are the scans' indices in ``load_digits()``.

        Args:
            path: Output folder (created if needed).

        Returns:
            ``path`` as a string.
        """
        images, digits, splits = self._splits()
        size = self.resolved_config.size[0]
        for split, idx in splits.items():
            if not idx:
                continue
            raw = ArrayDataset(images[idx], None, None, in_chans=1, image_size=size)
            for position, index in enumerate(idx):
                folder = os.path.join(os.fspath(path), split, str(int(digits[index])))
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(raw.image(position)[:, :, 0]).save(os.path.join(folder, f"{index:04d}.png"))
        return os.fspath(path)
