"""Segmentation DataModules: images with a mask of class indices each, from folders or CSV tables.

* :class:`SegmentationFolderDataModule`: ``root/{train,val,test}/images/<name>.<ext>`` with
  ``root/{train,val,test}/masks/<name>.png``, an optional ``root/classes.txt`` and ``root/predict/``.
* :class:`SegmentationCSVDataModule`: tables with an image and a mask column.

Both are segmentation DataModules (:mod:`lit_transfer.data.segmentation_base`): masks checked, the letterbox for
evaluation, image-and-mask augmentations, batches ``(images, masks)``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from lit_transfer.data import targets as t
from lit_transfer.data.csv_table import TableSplits
from lit_transfer.data.file_base import Files, check_dir
from lit_transfer.data.listing import list_images
from lit_transfer.data.segmentation_base import SegmentationDataModule, read_classes_file

__all__ = ["SegmentationCSVDataModule", "SegmentationFolderDataModule"]

_LAYOUT = (
    "Expected root/train/images/<name>.<ext> with root/train/masks/<name>.png (optional root/val/ and root/test/"
    " alike, root/classes.txt, root/predict/)."
)
_SHOWN = 20


def _listing(paths: list[str]) -> str:
    return "\n".join(f"  {p}" for p in paths[:_SHOWN]) + (
        f"\n  ... and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    )


class SegmentationFolderDataModule(SegmentationDataModule):
    """Images and masks in folders: ``root/<split>/images/<name>.<ext>`` and ``root/<split>/masks/<name>.png``.

    The mask of ``images/a/b.jpg`` is ``masks/a/b.png`` (sub-folders allowed); its pixels are class indices, 255
    (``ignore_index``) where no class applies. ``root/classes.txt`` names the classes, one per line in index order;
    without it the classes are ``"0"`` ... ``"C-1"``, with ``C`` one more than the largest index in the training
    masks. Without ``root/val``, a random ``val_fraction`` of the training pairs validates. Class names and count are
    known right after ``__init__`` (the CLI links them into the model).

    Args:
        root: Dataset folder.
        predict_dir: Folder of unlabelled images (searched recursively); default ``root/predict`` if present.
        ignore_index: Mask value of ignored pixels.
        **kwargs: The arguments of :class:`~lit_transfer.data.segmentation_base.SegmentationDataModule` and its
            bases (``val_fraction``, ``on_bad_image``, ``scan``, ``batch_size``, ``num_workers``, ``seed``,
            ``train_transform``, ``data_config``, ``image_size``, ``in_chans``, ...).

    Raises:
        FileNotFoundError: ``root``, ``root/train/images`` or a mask does not exist (every missing mask listed).
        ValueError: Two images share a name, ``classes.txt`` is malformed, or the masks hold fewer than 2 classes.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for split in ("train/images", "train/masks"):
        ...     (root / split).mkdir(parents=True)
        >>> for i in range(4):
        ...     Image.new("RGB", (40, 30), (60 * i, 0, 0)).save(root / "train/images" / f"{i}.jpg")
        ...     Image.fromarray(np.full((30, 40), i % 3, np.uint8)).save(root / "train/masks" / f"{i}.png")
        >>> dm = SegmentationFolderDataModule(root, image_size=32, batch_size=2, num_workers=0, val_fraction=0.25)
        >>> dm.num_classes, dm.class_names
        (3, ['0', '1', '2'])
        >>> dm.setup("fit")
        >>> images, masks = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), tuple(masks.shape), masks.dtype
        ((2, 3, 32, 32), (2, 32, 32), torch.int64)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        predict_dir: str | os.PathLike | None = None,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        self.root = check_dir(root, "root", _LAYOUT)
        check_dir(os.path.join(self.root, "train", "images"), "root/train/images", _LAYOUT)
        super().__init__(ignore_index=ignore_index, **kwargs)
        self._pairs: dict[str, Files] = {}
        for split in ("train", "val", "test"):
            pairs = self._list_pairs(split)
            if pairs is not None:
                self._pairs[split] = pairs
        if not self._pairs["train"][0]:
            raise ValueError(f"{os.path.join(self.root, 'train', 'images')!r} holds no image files. {_LAYOUT}")
        classes = os.path.join(self.root, "classes.txt")
        names = read_classes_file(classes) if os.path.isfile(classes) else None
        self._name_classes(names, [str(m) for m in self._pairs["train"][1] or []], repr(self.root))
        if predict_dir is not None:
            predict_dir = check_dir(predict_dir, "predict_dir", "Pass a folder of images to predict on.")
        self.predict_dir = predict_dir

    def _list_pairs(self, split: str) -> Files | None:
        """The split's images and their masks, or ``None`` when the split has no ``images`` folder."""
        images_dir = os.path.join(self.root, split, "images")
        if not os.path.isdir(images_dir):
            return None
        masks_dir = os.path.join(self.root, split, "masks")
        images = list_images(images_dir)
        stems = [os.path.splitext(os.path.relpath(p, images_dir))[0] for p in images]
        repeated = sorted({s for s in stems if stems.count(s) > 1})
        if repeated:
            raise ValueError(
                f"{images_dir!r} holds several images named {repeated[:5]} (another extension each), so their masks"
                " would be the same file. Rename or remove one of each."
            )
        masks = [os.path.join(masks_dir, stem + ".png") for stem in stems]
        missing = [m for m in masks if not os.path.isfile(m)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) of {images_dir!r} have no mask; each image <name>.<ext> needs"
                f" {os.path.join(masks_dir, '<name>.png')!r}. Missing:\n{_listing(missing)}"
            )
        return images, list(masks)

    def _labelled_files(self, split: Literal["train", "val", "test"]) -> Files | None:
        pairs = self._pairs.get(split)
        return None if pairs is None else (list(pairs[0]), list(pairs[1] or []))

    def _split_hint(self, split: str) -> str:
        if split == "predict":
            return f"Add images to {os.path.join(self.root, 'predict')!r} or pass `predict_dir`."
        return f"Add {os.path.join(self.root, split, 'images')!r} and {os.path.join(self.root, split, 'masks')!r}."

    def _predict_source(self) -> str | None:
        if self.predict_dir is not None:
            return self.predict_dir
        default = os.path.join(self.root, "predict")
        return default if os.path.isdir(default) else None


class SegmentationCSVDataModule(TableSplits, SegmentationDataModule):
    """Images and masks listed in CSV tables: an ``image`` and a ``mask`` column per row.

    Paths are relative to the CSV's folder (or absolute). ``classes_file`` names the classes (one per line, in
    index order); without it they are counted from the training masks, as for
    :class:`SegmentationFolderDataModule`.

    Args:
        train_csv: Training table.
        val_csv: Optional validation table (else a random ``val_fraction`` of the training rows).
        test_csv: Optional test table.
        predict_csv: Optional table of unlabelled images (only ``image_column`` is read).
        predict_dir: Alternatively, a folder of unlabelled images.
        image_column: Column with the image paths.
        mask_column: Column with the mask paths.
        classes_file: Optional ``classes.txt``.
        ignore_index: Mask value of ignored pixels.
        **kwargs: As for :class:`SegmentationFolderDataModule`.

    Raises:
        FileNotFoundError: A table, an image or a mask it lists does not exist (every missing file listed).
        ValueError: A column is missing or a table is empty; ``classes_file`` is malformed.
    """

    def __init__(
        self,
        train_csv: str | os.PathLike,
        val_csv: str | os.PathLike | None = None,
        test_csv: str | os.PathLike | None = None,
        predict_csv: str | os.PathLike | None = None,
        predict_dir: str | os.PathLike | None = None,
        image_column: str = "image",
        mask_column: str = "mask",
        classes_file: str | os.PathLike | None = None,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index=ignore_index, **kwargs)
        if predict_csv is not None and predict_dir is not None:
            raise ValueError("Pass either `predict_csv` or `predict_dir`, not both.")
        hint = "Set `image_column` and `mask_column` to the right names."
        self._tables: dict[str, Files] = {}
        for split, csv_path in (("train", train_csv), ("val", val_csv), ("test", test_csv)):
            if csv_path is not None:
                table = t.read_table(csv_path, f"{split}_csv", (image_column, mask_column), hint)
                images = t.resolve_paths(table, image_column, "image")
                self._tables[split] = (images, list(t.resolve_paths(table, mask_column, "mask")))
        if classes_file is not None and not os.path.isfile(classes_file):
            raise FileNotFoundError(f"`classes_file` {os.fspath(classes_file)!r} does not exist.")
        names = read_classes_file(classes_file) if classes_file is not None else None
        self._name_classes(names, [str(m) for m in self._tables["train"][1] or []], f"`train_csv` {train_csv!r}")
        self.predict_dir = None if predict_dir is None else check_dir(predict_dir, "predict_dir", "")
        self._predict_list: list[str] | None = None
        if predict_csv is not None:
            predict = t.read_table(predict_csv, "predict_csv", (image_column,), "Set `image_column` to the right name.")
            self._predict_list = t.resolve_paths(predict, image_column, "image")
