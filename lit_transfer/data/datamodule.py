"""``ImageFolderDataModule`` and ``CSVDataModule``: labelled image files from folders or CSV tables."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from lit_transfer.data.decode import has_image, list_images, unique_sorted
from lit_transfer.data.files import FileImageDataModule, Files, check_dir
from lit_transfer.data.pipeline import TransformArg

_LAYOUT = "Expected root/train/<class>/*.png (optional root/val/<class>/, root/test/<class>/, root/predict/)."


def _check_classes(class_names: list[str], where: str) -> None:
    if len(class_names) < 2:
        raise ValueError(
            f"{where} has {len(class_names)} class(es) {class_names}; classification needs at least 2. " + _LAYOUT
        )


class ImageFolderDataModule(FileImageDataModule):
    """Images in class folders: ``root/train/<class>/*``, optional ``val/``, ``test/`` and ``predict/``.

    Class names are the sorted folder names of ``root/train`` and are known right after ``__init__``. Without
    ``root/val``, a stratified ``val_fraction`` of ``train`` (seeded by ``seed``) is held out for validation.
    Train/val/test batches are ``(images, labels)``; predict batches are ``(images, indices)`` into
    :attr:`predict_paths`.

    Args:
        root: Dataset folder.
        predict_dir: Folder of unlabelled images (searched recursively); default ``root/predict`` if present.
        val_fraction: See :class:`~lit_transfer.data.files.FileImageDataModule`.
        on_bad_image: ``"error"`` or ``"skip"`` unreadable files (see ``FileImageDataModule``).
        scan: Check all files at ``setup()``.
        batch_size: See :class:`~lit_transfer.data.base.BaseImageDataModule` (same for the arguments below).
        num_workers: Default ``min(4, os.cpu_count())``.
        seed: Seed of the split, the order and the augmentations.
        train_transform: Preset name, pipeline or pipeline file.
        data_config: The backbone's timm data config.
        image_size: Square size overriding the data config.
        in_chans: 3 (RGB) or 1 (grayscale).
        balanced_sampling: Class-balanced training draws.
        persistent_workers: Keep workers between epochs.
        pin_memory: ``None`` pins when CUDA is available.
        drop_last: Drop the last incomplete training batch.

    Example:
        >>> import os, tempfile
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for cls in ("cat", "dog"):
        ...     os.makedirs(os.path.join(root, "train", cls))
        ...     for i in range(3):
        ...         Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(os.path.join(root, "train", cls, f"{i}.png"))
        >>> dm = ImageFolderDataModule(root, batch_size=2, num_workers=0, image_size=32)
        >>> dm.num_classes, dm.class_names
        (2, ['cat', 'dog'])
        >>> dm.setup("fit")
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), images.dtype
        ((2, 3, 32, 32), torch.float32)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        predict_dir: str | os.PathLike | None = None,
        val_fraction: float = 0.2,
        on_bad_image: Literal["error", "skip"] = "error",
        scan: bool = True,
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 42,
        train_transform: TransformArg | None = "light",
        data_config: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        balanced_sampling: bool = False,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        self.root = check_dir(root, "root", _LAYOUT)
        train_dir = check_dir(os.path.join(self.root, "train"), "root/train", _LAYOUT)
        super().__init__(
            val_fraction=val_fraction,
            on_bad_image=on_bad_image,
            scan=scan,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            train_transform=train_transform,
            data_config=data_config,
            image_size=image_size,
            in_chans=in_chans,
            balanced_sampling=balanced_sampling,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            drop_last=drop_last,
        )
        self.class_names = self._class_dirs(train_dir)
        _check_classes(self.class_names, f"Training folder {train_dir!r}")
        for name in self.class_names:
            if not has_image(os.path.join(train_dir, name)):
                raise ValueError(
                    f"Class folder {os.path.join(train_dir, name)!r} contains no image files; add images or remove it."
                )
        for split in ("val", "test"):
            split_dir = os.path.join(self.root, split)
            if os.path.isdir(split_dir):
                unknown = sorted(set(self._class_dirs(split_dir)) - set(self.class_names))
                if unknown:
                    raise ValueError(
                        f"{split_dir!r} has class folders {unknown} that are not in {train_dir!r}; "
                        f"known classes: {self.class_names}."
                    )
        if predict_dir is not None:
            predict_dir = check_dir(predict_dir, "predict_dir", "Pass a folder of images to predict on.")
        self.predict_dir = predict_dir

    @staticmethod
    def _class_dirs(folder: str) -> list[str]:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))

    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        split_dir = os.path.join(self.root, split)
        if not os.path.isdir(split_dir):
            return None
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            class_dir = os.path.join(split_dir, name)
            found = list_images(class_dir) if os.path.isdir(class_dir) else []
            paths.extend(found)
            labels.extend([label] * len(found))
        return paths, labels

    def _split_hint(self, split: str) -> str:
        if split == "predict":
            return f"Add images to {os.path.join(self.root, 'predict')!r} or pass `predict_dir`."
        return f"Add class folders under {os.path.join(self.root, split)!r} ({split}/<class>/*.jpg)."

    def _predict_source(self) -> str | None:
        if self.predict_dir is not None:
            return self.predict_dir
        default = os.path.join(self.root, "predict")
        return default if os.path.isdir(default) else None


def _read_csv(path: str | os.PathLike, argument: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{argument}` file {path!r} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"`{argument}` {path!r} lacks column(s) {missing}; its columns are {header}. Set `path_column` / "
                "`label_column` to the right names."
            )
        rows = [{c: (row.get(c) or "").strip() for c in columns} for row in reader]
    if not rows:
        raise ValueError(f"`{argument}` {path!r} has no rows.")
    return rows


def _resolve_paths(rows: list[dict[str, str]], column: str, csv_path: str | os.PathLike, argument: str) -> list[str]:
    base = Path(csv_path).resolve().parent
    paths = [str(base / row[column]) for row in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"  {p}" for p in missing[:20]) + (
            f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise FileNotFoundError(
            f"`{argument}` {os.fspath(csv_path)!r} lists {len(missing)} file(s) that do not exist (paths are relative "
            f"to the CSV's folder):\n{shown}"
        )
    return paths


class CSVDataModule(FileImageDataModule):
    """Images listed in CSV files: a path column (relative to the CSV's folder, or absolute) and a label column.

    Labels are read in ``__init__``: class names are the distinct training labels as strings (sorted
    numerically when all are integers), so ``num_classes`` is known before ``setup()``. Without ``val_csv``,
    a stratified ``val_fraction`` of the training rows is held out.

    Args:
        train_csv: Training table.
        val_csv: Optional validation table.
        test_csv: Optional test table.
        predict_csv: Optional table of unlabelled images (only ``path_column`` is read).
        predict_dir: Alternatively, a folder of unlabelled images.
        path_column: Column with image paths.
        label_column: Column with class labels.
        val_fraction: See :class:`~lit_transfer.data.files.FileImageDataModule`.
        on_bad_image: ``"error"`` or ``"skip"`` unreadable files.
        scan: Check all files at ``setup()``.
        batch_size: See :class:`~lit_transfer.data.base.BaseImageDataModule` (same for the arguments below).
        num_workers: Default ``min(4, os.cpu_count())``.
        seed: Seed of the split, the order and the augmentations.
        train_transform: Preset name, pipeline or pipeline file.
        data_config: The backbone's timm data config.
        image_size: Square size overriding the data config.
        in_chans: 3 (RGB) or 1 (grayscale).
        balanced_sampling: Class-balanced training draws.
        persistent_workers: Keep workers between epochs.
        pin_memory: ``None`` pins when CUDA is available.
        drop_last: Drop the last incomplete training batch.

    Raises:
        FileNotFoundError: A CSV, or a file it lists, does not exist (all missing files are listed).
        ValueError: A column is missing, a table is empty, there are fewer than two classes, or a val/test label
            does not occur in training.
    """

    def __init__(
        self,
        train_csv: str | os.PathLike,
        val_csv: str | os.PathLike | None = None,
        test_csv: str | os.PathLike | None = None,
        predict_csv: str | os.PathLike | None = None,
        predict_dir: str | os.PathLike | None = None,
        path_column: str = "path",
        label_column: str = "label",
        val_fraction: float = 0.2,
        on_bad_image: Literal["error", "skip"] = "error",
        scan: bool = True,
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 42,
        train_transform: TransformArg | None = "light",
        data_config: Mapping[str, Any] | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        balanced_sampling: bool = False,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            val_fraction=val_fraction,
            on_bad_image=on_bad_image,
            scan=scan,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            train_transform=train_transform,
            data_config=data_config,
            image_size=image_size,
            in_chans=in_chans,
            balanced_sampling=balanced_sampling,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            drop_last=drop_last,
        )
        if predict_csv is not None and predict_dir is not None:
            raise ValueError("Pass either `predict_csv` or `predict_dir`, not both.")
        self.path_column, self.label_column = path_column, label_column
        self._tables: dict[str, Files] = {}
        raw: dict[str, tuple[list[str], list[str]]] = {}
        for split, csv_path in (("train", train_csv), ("val", val_csv), ("test", test_csv)):
            if csv_path is None:
                continue
            rows = _read_csv(csv_path, f"{split}_csv", (path_column, label_column))
            raw[split] = (_resolve_paths(rows, path_column, csv_path, f"{split}_csv"), [r[label_column] for r in rows])
        self.class_names = unique_sorted(raw["train"][1])
        _check_classes(self.class_names, f"`train_csv` {os.fspath(train_csv)!r} (column {label_column!r})")
        index = {name: i for i, name in enumerate(self.class_names)}
        for split, (paths, labels) in raw.items():
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise ValueError(
                    f"`{split}_csv` has labels {unknown[:10]} that do not occur in `train_csv`; "
                    f"known: {self.class_names}."
                )
            self._tables[split] = (paths, [index[label] for label in labels])
        self.predict_dir = None if predict_dir is None else check_dir(predict_dir, "predict_dir", "")
        self._predict_list: list[str] | None = None
        if predict_csv is not None:
            rows = _read_csv(predict_csv, "predict_csv", (path_column,))
            self._predict_list = _resolve_paths(rows, path_column, predict_csv, "predict_csv")

    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        table = self._tables.get(split)
        return None if table is None else (list(table[0]), list(table[1] or []))

    def _split_hint(self, split: str) -> str:
        return "Pass `predict_csv` or `predict_dir`." if split == "predict" else f"Pass `{split}_csv`."

    def _predict_source(self) -> str | None:
        return self.predict_dir

    def _predict_files(self) -> list[str] | None:
        return list(self._predict_list) if self._predict_list is not None else super()._predict_files()
