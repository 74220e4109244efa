"""What real folders and tables bring: symlink loops, the same image twice, non-UTF-8 CSVs, a batch of one."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
from photo_fixture import CLASSES, make_photo_csv, make_photo_folder
from PIL import Image

from lit_transfer import TransferClassifier
from lit_transfer.data import CSVDataModule, ImageFolderDataModule
from lit_transfer.data.listing import list_images


def _folder(tmp_path: Path, per_class: int = 6) -> Path:
    root = tmp_path / "photos"
    return make_photo_folder(root, per_class=per_class, val_per_class=2, test_per_class=2, bad_files=False)


def _module(root: Path, **kwargs) -> ImageFolderDataModule:
    return ImageFolderDataModule(root, batch_size=4, num_workers=0, image_size=16, **kwargs)


def test_a_symlink_loop_is_not_followed_and_labels_stay_right(tmp_path):
    root = _folder(tmp_path)
    os.symlink("..", root / "train" / "cat" / "loop")  # train/cat/loop -> train: every class again, under cat
    with pytest.warns(UserWarning, match=r"(?s)Not following 1 linked folder.*loop -> .*a loop"):
        data = _module(root)
        data.setup("fit")
    train, val = data.train_dataset, data.val_dataset
    assert len(train) == 6 * len(CLASSES) and len(val) == 2 * len(CLASSES)  # not the tree again and again, under cat
    cat = data.class_names.index("cat")
    for dataset in (train, val):
        for path, label in zip(dataset.paths, dataset.labels):
            assert (label == cat) == ("/cat/cat_" in path and "/loop/" not in path), path


def test_a_linked_folder_outside_the_tree_is_followed(tmp_path):
    root = _folder(tmp_path)
    elsewhere = tmp_path / "more_cats"
    shutil.copytree(root / "val" / "cat", elsewhere)
    os.symlink(elsewhere, root / "train" / "cat" / "more")
    found = list_images(root / "train" / "cat")
    assert sum("/more/" in p for p in found) == 2 and len(found) == 8


def test_the_same_image_in_two_class_folders_is_an_error_naming_both(tmp_path):
    root = _folder(tmp_path)
    os.symlink(root / "train" / "dog" / "dog_train_000.jpg", root / "train" / "cat" / "also_a_cat.jpg")
    data = _module(root)
    pattern = r"The train split: .*also_a_cat\.jpg.* and .*dog_train_000\.jpg.*different targets .'cat' and 'dog'"
    with pytest.raises(ValueError, match=pattern):
        data.setup("fit")


def test_a_copy_in_train_and_test_is_reported(tmp_path):
    root = _folder(tmp_path)
    shutil.copy(root / "train" / "owl" / "owl_train_001.png", root / "test" / "owl" / "copied.png")
    with pytest.warns(UserWarning, match=r"1 image\(s\) are in both the train and the test split.*copied\.png"):
        _module(root).setup("fit")


def _csv(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def test_repeated_csv_rows_count_once_and_never_reach_both_sides_of_the_hold_out(tmp_path):
    table = make_photo_csv(tmp_path, per_class=6)
    rows = list(csv.reader(table.open()))[1:]
    repeated = _csv(tmp_path / "repeated.csv", rows + rows[:10] + rows[:10])  # rows 1-10 three times each
    with pytest.warns(UserWarning, match=r"`train_csv` .*repeated\.csv.*: 20 entries are repeats.*row 1 \(line 2"):
        data = CSVDataModule(repeated, batch_size=4, num_workers=0, image_size=16, val_fraction=0.25)
    data.setup("fit")
    train, val = set(data.train_dataset.paths), set(data.val_dataset.paths)
    assert len(train) + len(val) == len(rows) and not train & val


def test_repeated_csv_rows_with_different_labels_are_an_error_naming_the_rows(tmp_path):
    table = make_photo_csv(tmp_path, per_class=6)
    rows = list(csv.reader(table.open()))[1:]
    conflicting = _csv(tmp_path / "conflict.csv", [*rows, (rows[0][0], "dog")])
    with pytest.raises(ValueError, match=r"row 1 \(line 2, .*\) and row 25 \(line 26, .*\) are the same image"):
        CSVDataModule(conflicting, batch_size=4, num_workers=0, image_size=16)


def test_a_non_utf8_csv_is_refused_naming_the_file_and_line(tmp_path):
    table = make_photo_csv(tmp_path, per_class=6)
    rows = list(csv.reader(table.open()))[1:]
    latin = _csv(tmp_path / "latin1.csv", [*rows[:5], (rows[5][0], "café"), *rows[6:]], encoding="latin-1")
    with pytest.raises(ValueError) as caught:
        CSVDataModule(latin, batch_size=4, num_workers=0, image_size=16)
    message = str(caught.value)
    assert "`train_csv`" in message and "latin1.csv" in message and "is not UTF-8 text: line 7" in message
    assert "e9" in message and "iconv" in message


def test_a_last_batch_of_one_image_never_reaches_batchnorm(tmp_path):
    """5 training images, batch 4: the last batch would hold one image, and a training BatchNorm fails on it."""
    root = tmp_path / "photos"
    for cls, count in (("cat", 3), ("dog", 2)):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(count):
            colour = (60 * i, 100 if cls == "cat" else 10, 30)
            Image.new("RGB", (24, 20), colour).save(root / "train" / cls / f"{i}.png")
    data = ImageFolderDataModule(root, batch_size=4, num_workers=0, image_size=16, val_fraction=0)
    model = TransferClassifier("test_resnet", num_classes=2, pretrained=False, freeze="full_fine_tune")
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2  # one batch of 4 per epoch, the single image left out
    assert data.drops_single_image(5) and not data.drops_single_image(4) and not data.drops_single_image(1)
