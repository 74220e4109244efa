"""``FileImageDataModule``: the base of the DataModules that read image files from disk.

It assembles the splits (holding out a stratified validation fraction when there is no validation split), counts
each image once per split and reports images shared by two splits (:mod:`lit_transfer.data.duplicates`), scans
the files for unreadable ones, builds the datasets and lists the predict paths; a subclass only says which files
belong to which split (:class:`~lit_transfer.data.image_folder.ImageFolderDataModule`,
:class:`~lit_transfer.data.csv_table.CSVDataModule`).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from lit_transfer.data.base import BaseImageDataModule
from lit_transfer.data.dataset import ImageDataset
from lit_transfer.data.decode import BadImageError, format_bad_files, scan_images
from lit_transfer.data.duplicates import drop_repeats, same_file_groups, warn_overlaps
from lit_transfer.data.listing import list_images
from lit_transfer.data.splits import stratified_split
from lit_transfer.errors import is_number

Split = Literal["train", "val", "test", "predict"]
Files = tuple[list[str], list[Any] | None]
"""A split's paths and targets (class indices, or the rows of a multi-label or regression target array)."""

_STAGE_SPLITS: dict[str | None, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
    None: ("train", "val", "test", "predict"),
}


class FileImageDataModule(BaseImageDataModule):
    """Image files on disk: subclasses list each split's files; this class splits, scans and builds datasets.

    Args:
        val_fraction: Held-out fraction of ``train`` used for validation when there is no explicit
            validation split (stratified per class, seeded by ``seed``); 0 disables validation.
        on_bad_image: ``"error"``: ``setup()`` raises one :class:`BadImageError` listing every unreadable file;
            ``"skip"``: they are dropped from the index (identically on every rank) with a warning giving
            the count.
        scan: Check every file at ``setup()`` (Pillow ``verify()`` and a draft-mode decode; cached per file
            between calls). With ``False``, an unreadable file raises from the worker, naming the file.
        **kwargs: The arguments of :class:`~lit_transfer.data.base.BaseImageDataModule` (``batch_size``,
            ``num_workers``, ``seed``, ``train_transform``, ``data_config``, ``image_size``, ``in_chans``, ...);
            ``num_workers`` defaults to ``min(4, os.cpu_count())`` here.
    """

    def __init__(
        self,
        val_fraction: float = 0.2,
        on_bad_image: Literal["error", "skip"] = "error",
        scan: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_number(val_fraction) or not 0 <= val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"`on_bad_image` must be 'error' or 'skip', got {on_bad_image!r}.")
        self.val_fraction = float(val_fraction)
        self.on_bad_image = on_bad_image
        self.scan = bool(scan)
        self.predict_paths: list[str] = []
        self.skipped_files: dict[str, str] = {}
        self._scan_cache: dict[str, str | None] = {}

    # Subclass hooks --------------------------------------------------------------------------------
    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        """Paths and class indices of ``split``, or ``None`` when the split does not exist."""
        raise NotImplementedError

    def _predict_source(self) -> str | None:
        """Folder of unlabelled images for ``predict``, or ``None``."""
        return None

    def _predict_files(self) -> list[str] | None:
        source = self._predict_source()
        if source is None:
            return None
        paths = list_images(source)
        if not paths:
            raise FileNotFoundError(f"The predict folder {source!r} contains no image files.")
        return paths

    def _unique(self, split: str, files: Files | None) -> Files | None:
        """``files`` with each image once (:func:`~lit_transfer.data.duplicates.drop_repeats`); ``None`` stays."""
        if files is None:
            return None
        paths, labels = files
        groups = same_file_groups(paths)
        if not groups:
            return files
        targets = [self._target_name(label) for label in labels] if labels is not None else [None] * len(paths)
        dropped = drop_repeats(groups, targets, lambda i: repr(paths[i]), f"The {split} split")
        keep = [i for i in range(len(paths)) if i not in dropped]
        return [paths[i] for i in keep], None if labels is None else [labels[i] for i in keep]

    def _hold_out(self, labels: Sequence[Any]) -> tuple[list[int], list[int]]:
        """``(kept, held)`` training indices when validation is held out of ``train``: stratified by class."""
        return stratified_split(labels, self.val_fraction, self.seed)

    def _targets_summary(self) -> str:
        """What the targets are, for the line ``setup`` logs (``"4 classes"``)."""
        return f"{self.num_classes} classes"

    def _dataset(self, split: Split, paths: list[str], labels: list[Any] | None, transform: Any) -> Dataset:
        """The dataset of a split's files and targets (an :class:`ImageDataset`; the segmentation modules' differs)."""
        return ImageDataset(paths, labels, transform, in_chans=self.in_chans, seed=self.seed)

    # Assembly --------------------------------------------------------------------------------------
    def _collect(self, splits: tuple[Split, ...]) -> dict[Split, Files]:
        files: dict[Split, Files] = {}
        if "train" in splits or "val" in splits:
            train = self._unique("train", self._labelled_files("train"))  # before the hold-out: no copy on both sides
            val = self._unique("val", self._labelled_files("val"))
            if val is None and train is not None and self.val_fraction > 0:
                paths, labels = train
                kept, held = self._hold_out(labels or [])
                train = ([paths[i] for i in kept], [labels[i] for i in kept])  # type: ignore[index]
                val = ([paths[i] for i in held], [labels[i] for i in held])  # type: ignore[index]
            if "train" in splits and train is not None:
                files["train"] = train
            if "val" in splits and val is not None and val[0]:
                files["val"] = val
        if "test" in splits and (test := self._unique("test", self._labelled_files("test"))) is not None:
            files["test"] = test
        if "predict" in splits and (predict := self._predict_files()) is not None:
            files["predict"] = (predict, None)
        return files

    def _scan(self, paths: list[str]) -> dict[str, str]:
        """Bad files among ``paths``; new paths are scanned (sharded across DDP ranks) and cached."""
        todo = sorted({p for p in paths if p not in self._scan_cache})
        if todo:
            distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            if distributed:
                rank, world = dist.get_rank(), dist.get_world_size()
                parts: list[dict[str, str] | None] = [None] * world
                dist.all_gather_object(parts, scan_images(todo[rank::world]))
                bad = {k: v for part in parts for k, v in (part or {}).items()}
            else:
                bad = scan_images(todo)
            self._scan_cache.update({p: bad.get(p) for p in todo})
        return {p: r for p in paths if (r := self._scan_cache.get(p)) is not None}

    def setup(self, stage: str | None = None) -> None:
        """Index the files of ``stage``'s splits, scan them, and build the datasets."""
        files = self._collect(_STAGE_SPLITS.get(stage, _STAGE_SPLITS[None]))
        if "train" in files:
            self._report_overlaps(files)
        if self.scan:
            everything = [p for paths, _ in files.values() for p in paths]
            bad = self._scan(everything)
            if bad and self.on_bad_image == "error":
                raise BadImageError(
                    f"{len(bad)} image file(s) cannot be decoded:\n{format_bad_files(bad)}\n"
                    "Fix or delete them, or pass `on_bad_image='skip'` to leave them out."
                )
            if bad:
                self.skipped_files.update(bad)
                rank_zero_warn(f"Skipping {len(bad)} unreadable image file(s):\n{format_bad_files(bad, limit=10)}")
                files = {split: _drop(paths, labels, bad) for split, (paths, labels) in files.items()}
        for split, (paths, labels) in files.items():
            if split == "train" and not paths:
                raise ValueError("The training split is empty after leaving out unreadable files.")
            transform = self.build_train_transform() if split == "train" else self.build_eval_transform()
            dataset = self._dataset(split, paths, labels, transform)
            setattr(self, f"{split}_dataset", dataset)
            if split == "predict":
                self.predict_paths = list(paths)
        if "train" in files:
            rank_zero_info(f"{type(self).__name__}: {_summary(files)}, {self._targets_summary()}.")

    def _target_name(self, label: Any) -> Any:
        """A target in a comparable, readable form: a class name for a class index, a tuple for a target row."""
        value = _hashable(label)
        if isinstance(value, numbers.Integral) and 0 <= int(value) < len(self.class_names):
            return self.class_names[int(value)]
        return value

    def _report_overlaps(self, files: dict[Split, Files]) -> None:
        """Warn about images in two of train, val and test (test read here too when the stage does not use it)."""
        labelled: dict[str, list[str]] = {s: files[s][0] for s in ("train", "val", "test") if s in files}
        if "test" not in labelled and (test := self._labelled_files("test")) is not None:
            labelled["test"] = test[0]
        warn_overlaps(labelled)


def _hashable(label: Any) -> Any:
    """A class index as it is; a target row (multi-hot, values) as a tuple."""
    tolist = getattr(label, "tolist", None)
    value = tolist() if callable(tolist) else label
    return tuple(value) if isinstance(value, list) else value


def _drop(paths: list[str], labels: list[Any] | None, bad: dict[str, str]) -> Files:
    keep = [i for i, p in enumerate(paths) if p not in bad]
    return [paths[i] for i in keep], None if labels is None else [labels[i] for i in keep]


def _summary(files: dict[Split, Files]) -> str:
    return ", ".join(f"{split} {len(paths)}" for split, (paths, _) in files.items())


def check_two_classes(class_names: list[str], where: str, hint: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless there are at least two classes."""
    if len(class_names) < 2:
        raise ValueError(
            f"{where} has {len(class_names)} class(es) {class_names}; classification needs at least 2. {hint}"
        )


def check_dir(path: str | os.PathLike, argument: str, hint: str) -> str:
    """Return ``path`` as ``str`` if it is a directory, else raise ``FileNotFoundError`` naming the argument."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`{argument}` directory {path!r} does not exist. {hint}")
    return path
