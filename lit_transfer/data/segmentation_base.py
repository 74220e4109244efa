"""``SegmentationDataModule``: what the folder and CSV segmentation DataModules share.

Files are listed by the subclass as (image, mask) pairs per split; this class names the classes (a ``classes.txt``
or counted from the training masks), holds out a random validation fraction, checks every mask before a split
trains or evaluates (:mod:`lit_transfer.data.masks`: decodable, indices not colours, the image's size, values in
range; one error lists every bad mask), and builds :class:`~lit_transfer.data.segmentation_dataset.SegmentationDataset`
with the image-and-mask pipelines of :mod:`lit_transfer.data.segmentation_transforms`. The image scan, the
``on_bad_image`` policy, the epoch-seeded sampler and worker seeding are :class:`FileImageDataModule`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import albumentations as A
from torch.utils.data import Dataset

from lit_transfer.data.file_base import FileImageDataModule, Split
from lit_transfer.data.masks import COLOUR_HINT, MaskError, MaskFacts, image_size, mask_problem, scan_masks
from lit_transfer.data.segmentation_dataset import SegmentationDataset
from lit_transfer.data.segmentation_transforms import (
    build_segmentation_eval_transform,
    build_segmentation_train_transform,
)
from lit_transfer.data.targets import random_split
from lit_transfer.errors import check_int

__all__ = ["SegmentationDataModule", "read_classes_file"]

_SHOWN = 20


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """The class names of a ``classes.txt``: one per line, in index order (blank lines at the end ignored).

    Raises:
        ValueError: Fewer than two names, an empty line between names, or a name twice.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8-sig") as handle:
        lines = [line.strip() for line in handle.read().rstrip().splitlines()]
    if "" in lines:
        raise ValueError(
            f"Classes file {path!r} has an empty line {lines.index('') + 1}: line i names class index i - 1, one"
            " name per line."
        )
    repeated = sorted({name for name in lines if lines.count(name) > 1})
    if len(lines) < 2 or repeated:
        why = f"names {repeated} more than once" if repeated else f"names {len(lines)} class(es)"
        raise ValueError(
            f"Classes file {path!r} {why}; it must name at least 2 distinct classes, one per line, in index order"
            " (line 1 is class 0, usually the background)."
        )
    return lines


class SegmentationDataModule(FileImageDataModule):
    """Image files with a mask each: the shared base of the folder and CSV segmentation DataModules.

    Train, validation and test batches are ``(images, masks)``: ``float32`` ``(N, C, H, W)`` and ``int64``
    ``(N, H, W)`` class indices (``ignore_index`` where no class applies, and in the padding of the letterbox);
    predict batches are ``(images, indices)`` into :attr:`predict_paths`.

    Args:
        ignore_index: Mask value of pixels that count in no loss or metric (255 by default); the model's must be
            the same.
        **kwargs: The arguments of :class:`~lit_transfer.data.file_base.FileImageDataModule` (``val_fraction``: a
            random fraction of the training pairs when there is no validation split; ``on_bad_image``, ``scan``)
            and of :class:`~lit_transfer.data.base.BaseImageDataModule` (``batch_size``, ``num_workers``,
            ``seed``, ``train_transform``: a preset of :mod:`lit_transfer.data.segmentation_transforms` or a
            pipeline; ``data_config``, ``image_size``, ``in_chans``, ...).

    Attributes:
        task: ``"segmentation"``.
        class_names: The classes, index order (the background first, usually).
        ignore_index: See Args.
    """

    task = "segmentation"

    def __init__(self, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_int("ignore_index", ignore_index, 0, 65535, expected="an integer in 0..65535 (255 by default)")
        if self.balanced_sampling:
            raise ValueError(
                "`balanced_sampling=True` draws class-balanced images, but a mask holds several classes per image."
                " Leave `balanced_sampling` off (weigh rare classes with the model's `class_weights`)."
            )
        self.ignore_index = ignore_index
        self._mask_facts: dict[str, MaskFacts] = {}

    # ---------------------------------------------------------------------------------------- classes
    def _name_classes(self, names: list[str] | None, train_masks: Sequence[str], where: str) -> None:
        """Set :attr:`class_names` from ``names``, else from the largest index in the training masks."""
        if names is not None:
            self.class_names = names
            return
        facts = self._facts(train_masks)
        unreadable = {p: f for p, f in facts.items() if f.problem is not None}
        if unreadable:
            self._raise(unreadable_lines(unreadable), any(f.colour for f in unreadable.values()), "train")
        values = {v for f in facts.values() for v in f.values if v != self.ignore_index}
        count = max(values) + 1 if values else 0
        if count < 2:
            raise ValueError(
                f"The training masks of {where} hold only the class indices {sorted(values)} (besides"
                f" `ignore_index` {self.ignore_index}); a segmentation needs at least 2 classes, e.g. 0 for the"
                " background and 1 for the object. Check the masks' values, or name the classes in a classes file."
            )
        self.class_names = [str(i) for i in range(count)]

    def _facts(self, masks: Sequence[str]) -> dict[str, MaskFacts]:
        todo = [m for m in dict.fromkeys(masks) if m not in self._mask_facts]
        self._mask_facts.update(scan_masks(todo))
        return {m: self._mask_facts[m] for m in masks}

    # ---------------------------------------------------------------------------------------- checks
    def check_masks(self, split: str, images: Sequence[str], masks: Sequence[str]) -> None:
        """Refuse the split when any mask is unreadable, in colour, of another size than its image, or out of range.

        Raises:
            MaskError: Listing every bad mask and why (the first 20), with how to fix them.
        """
        facts = self._facts(masks)
        problems: list[str] = []
        colour = False
        for image, mask in zip(images, masks):
            fact = facts[mask]
            size = image_size(image) if fact.problem is None else None
            problem = mask_problem(fact, size, self.num_classes, self.ignore_index)
            if problem is not None:
                problems.append(f"  {mask}: {problem}.")
                colour = colour or fact.colour
        if problems:
            self._raise(problems, colour, split)

    def _raise(self, problems: list[str], colour: bool, split: str) -> None:
        shown = problems[:_SHOWN] + ([f"  ... and {len(problems) - _SHOWN} more"] if len(problems) > _SHOWN else [])
        indices = f"0..{self.num_classes - 1}" if self.class_names else "0, 1, ..."
        raise MaskError(
            f"{len(problems)} {split} mask(s) cannot be used:\n" + "\n".join(shown) + "\nEach mask must be a"
            f" single-channel image of its image's size holding class indices {indices} or {self.ignore_index}"
            " (ignore)." + (f" {COLOUR_HINT}" if colour else "")
        )

    # ---------------------------------------------------------------------------------------- datasets
    def _hold_out(self, labels: Sequence[Any]) -> tuple[list[int], list[int]]:
        """A seeded random ``val_fraction`` of the training pairs (masks hold several classes: no strata)."""
        return random_split(len(labels), self.val_fraction, self.seed)

    def _targets_summary(self) -> str:
        return f"{self.num_classes} classes {self.class_names} (masks)"

    def _dataset(self, split: Split, paths: list[str], labels: list[Any] | None, transform: Any) -> Dataset:
        if split == "predict" or labels is None:
            return SegmentationDataset(paths, None, transform, in_chans=self.in_chans, seed=self.seed)
        masks = [str(m) for m in labels]
        self.check_masks(split, paths, masks)
        return SegmentationDataset(paths, masks, transform, in_chans=self.in_chans, seed=self.seed)

    def build_train_transform(self) -> A.Compose:
        """A fresh training pipeline for image and mask (a segmentation preset or the given pipeline)."""
        return build_segmentation_train_transform(self.train_transform, self.resolved_config, self.ignore_index)

    def build_eval_transform(self) -> A.Compose:
        """A fresh evaluation pipeline: the letterbox (aspect ratio kept, padding ignored)."""
        return build_segmentation_eval_transform(self.resolved_config, self.ignore_index)


def unreadable_lines(facts: dict[str, MaskFacts]) -> list[str]:
    """``  <mask>: <problem>`` lines of unreadable masks."""
    return [f"  {path}: {fact.problem}." for path, fact in facts.items()]
