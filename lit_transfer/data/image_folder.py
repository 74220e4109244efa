"""``ImageFolderDataModule``: labelled images in class folders, ``root/train/<class>/*``."""

from __future__ import annotations

import os
from typing import Any, Literal

from lit_transfer.data.file_base import FileImageDataModule, Files, check_dir, check_two_classes
from lit_transfer.data.listing import has_image, list_images

__all__ = ["ImageFolderDataModule"]

_LAYOUT = "Expected root/train/<class>/*.png (optional root/val/<class>/, root/test/<class>/, root/predict/)."


class ImageFolderDataModule(FileImageDataModule):
    """Images in class folders: ``root/train/<class>/*``, optional ``val/``, ``test/`` and ``predict/``.

    Class names are the sorted folder names of ``root/train`` and are known right after ``__init__``. Without
    ``root/val``, a stratified ``val_fraction`` of ``train`` (seeded by ``seed``) is held out for validation.
    Train/val/test batches are ``(images, labels)``; predict batches are ``(images, indices)`` into
    :attr:`predict_paths`.

    Args:
        root: Dataset folder.
        predict_dir: Folder of unlabelled images (searched recursively); default ``root/predict`` if present.
        **kwargs: The arguments of :class:`~lit_transfer.data.file_base.FileImageDataModule` (``val_fraction``,
            ``on_bad_image``, ``scan``) and of :class:`~lit_transfer.data.base.BaseImageDataModule`
            (``batch_size``, ``num_workers``, ``seed``, ``train_transform``, ``data_config``, ``image_size``,
            ``in_chans``, ...).

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

    def __init__(self, root: str | os.PathLike, predict_dir: str | os.PathLike | None = None, **kwargs: Any) -> None:
        self.root = check_dir(root, "root", _LAYOUT)
        train_dir = check_dir(os.path.join(self.root, "train"), "root/train", _LAYOUT)
        super().__init__(**kwargs)
        self.class_names = self._class_dirs(train_dir)
        check_two_classes(self.class_names, f"Training folder {train_dir!r}", _LAYOUT)
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
