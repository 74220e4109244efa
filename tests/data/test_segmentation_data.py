"""Segmentation DataModules on real files: layout, classes, CSV, mask checks, letterbox, augmentation, seeding."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_fixture import CLASSES, SIZES, make_segmentation_csv, make_segmentation_folder, save_mask

from lit_transfer.data import MaskError, SegmentationCSVDataModule, SegmentationFolderDataModule, load_mask
from lit_transfer.data.decode import BadImageError
from lit_transfer.data.preprocessing import resolve_preprocessing
from lit_transfer.data.segmentation_transforms import (
    build_segmentation_eval_transform,
    build_segmentation_train_transform,
    letterbox_shape,
    restore_size,
)


def _data(root: Path, **kwargs) -> SegmentationFolderDataModule:
    kwargs.setdefault("image_size", 32)
    return SegmentationFolderDataModule(root, batch_size=4, num_workers=0, **kwargs)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_segmentation_folder(tmp_path / "data", train=6, val=2, test=2, predict=2)


def test_batches_are_images_and_masks_of_class_indices(root):
    data = _data(root)
    assert data.task == "segmentation" and data.class_names == list(CLASSES) and data.ignore_index == 255
    data.setup("fit")
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {0, 1, 2, 255} and {1, 2} <= set(masks.unique().tolist())
    data.setup("predict")
    images, indices = next(iter(data.predict_dataloader()))
    assert indices.tolist() == [0, 1] and len(data.predict_paths) == 2


def test_classes_are_counted_from_the_training_masks_without_a_classes_file(root):
    (root / "classes.txt").unlink()
    assert _data(root).class_names == ["0", "1", "2"]


def test_csv_tables_read_images_and_masks_relative_to_the_table(tmp_path):
    table = make_segmentation_csv(tmp_path, count=6)
    data = SegmentationCSVDataModule(table, val_fraction=0.34, image_size=32, batch_size=2, num_workers=0)
    assert data.num_classes == 3
    data.setup("fit")
    assert len(data.train_dataset) + len(data.val_dataset) == 6 and len(data.val_dataset) == 2
    _, masks = next(iter(data.val_dataloader()))
    assert masks.shape == (2, 32, 32)


def test_evaluation_letterboxes_and_ignores_the_padding(root):
    data = _data(root)
    data.setup("validate")
    image_path, mask_path = data.val_dataset.paths[1], data.val_dataset.masks[1]
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    inside = letterbox_shape(height, width, (32, 32))
    _, mask = data.val_dataset[1]
    assert (mask[inside[0] :, :] == 255).all() and (mask[:, inside[1] :] == 255).all()
    assert (mask[: inside[0], : inside[1]] != 255).float().mean() > 0.8  # the image's part: its labels
    expected = restore_size(mask.numpy().astype(np.uint8), (height, width), (32, 32))
    truth = load_mask(mask_path)
    assert expected.shape == truth.shape and (expected == truth).mean() > 0.85


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_letterbox_shape_is_the_one_albumentations_resizes_to(size):
    steps = A.Compose([A.LongestMaxSize(max_size=None, max_size_hw=size)])
    for height, width in [*((h, w) for w, h in SIZES), (7, 1000), (1000, 7), (33, 31), (95, 96), (31, 32)]:
        out = steps(image=np.zeros((height, width, 3), np.uint8))["image"]
        assert out.shape[:2] == letterbox_shape(height, width, size), (height, width)


@pytest.mark.parametrize("preset", ["light", "medium", "heavy"])
def test_augmentations_move_the_mask_with_the_image_and_keep_its_indices(preset):
    cfg = resolve_preprocessing(image_size=32)
    pipeline = build_segmentation_train_transform(preset, cfg, 255)
    pipeline.set_random_seed(0)
    stripes = np.zeros((48, 64), np.uint8)
    stripes[:, 32:] = 2  # right half class 2, drawn white in the image
    image = np.repeat(np.where(stripes == 2, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    for _ in range(20):
        out = pipeline(image=image, mask=stripes)
        mask, picture = out["mask"].numpy(), out["image"].numpy()
        assert set(np.unique(mask).tolist()) <= {0, 2, 255}  # nearest-neighbour: no blended index
        if preset == "light":  # geometry only: the white pixels are the class-2 pixels
            assert ((picture[0] > 0) == (mask == 2)).mean() > 0.95
    evaluation = build_segmentation_eval_transform(cfg, 255)(image=image, mask=stripes)
    assert evaluation["mask"][24:].unique().tolist() == [255]  # 64x48 -> 32x24, padded below with ignore


def test_training_batches_repeat_by_seed_and_epoch(root):
    batches = []
    for _ in range(2):
        data = _data(root, train_transform="medium", seed=3)
        data.setup("fit")
        batches.append([m for _, m in data.train_dataloader()])
    assert all(torch.equal(a, b) for a, b in zip(*batches))
    loader = data.train_dataloader()
    loader.sampler.set_epoch(1)  # what Lightning calls each epoch: another order and other augmentations
    other = [m for _, m in loader]
    assert not all(torch.equal(a, b) for a, b in zip(batches[0], other))


# ------------------------------------------------------------------------------------------------ refusals
def test_missing_masks_are_listed(root):
    for name in ("train_001.png", "train_004.png"):
        (root / "train" / "masks" / name).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"(?s)2 image\(s\) of .* have no mask.*train_001\.png\n.*train_004\.png"
    ):
        _data(root)


def test_a_mask_of_another_size_than_its_image_is_refused(root):
    mask = root / "val" / "masks" / "val_001.png"
    save_mask(np.zeros((10, 12), np.uint8), mask)
    with pytest.raises(MaskError, match=r"1 val mask\(s\) cannot be used:\n.*val_001\.png: 12x10 px, but its image is"):
        _data(root).setup("fit")


def test_class_indices_out_of_range_are_refused(root):
    save_mask(np.full((48, 64), 7, np.uint8), root / "train" / "masks" / "train_000.png")
    with pytest.raises(MaskError, match=r"train_000\.png: class index 7 out of range \(0\.\.2, or 255 = ignore\)"):
        _data(root).setup("fit")


def test_colour_masks_are_refused_with_the_palette_conversion(root):
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[:, 32:] = (230, 60, 60)
    Image.fromarray(colour).save(root / "train" / "masks" / "train_000.png")
    with pytest.raises(MaskError, match=r"(?s)train_000\.png: is a colour image \(RGB, 2 distinct colours\).*palette"):
        _data(root).setup("fit")


def test_grey_masks_saved_in_colour_and_palette_masks_give_their_indices(tmp_path):
    indices = np.array([[0, 1], [2, 255]], np.uint8)
    Image.fromarray(np.repeat(indices[..., None], 3, axis=2)).save(tmp_path / "grey_rgb.png")
    save_mask(indices, tmp_path / "palette.png", palette=True)
    for name in ("grey_rgb.png", "palette.png"):
        assert load_mask(tmp_path / name).tolist() == indices.tolist()


def test_masks_with_fewer_than_two_classes_are_refused(root):
    (root / "classes.txt").unlink()
    for path in (root / "train" / "masks").iterdir():
        save_mask(np.zeros(np.asarray(Image.open(path)).shape, np.uint8), path)
    with pytest.raises(ValueError, match=r"hold only the class indices \[0\].*at least 2 classes"):
        _data(root)


def test_a_bad_classes_file_and_a_bad_image_are_refused(root):
    (root / "classes.txt").write_text("background\n\nbox\n")
    with pytest.raises(ValueError, match=r"empty line 2"):
        _data(root)
    (root / "classes.txt").write_text("\n".join(CLASSES))
    (root / "train" / "images" / "train_000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError, match=r"train_000\.jpg"):
        _data(root).setup("fit")
    data = _data(root, on_bad_image="skip")
    data.setup("fit")
    assert len(data.train_dataset) == 5


def test_csv_rows_naming_missing_masks_are_listed(tmp_path):
    table = make_segmentation_csv(tmp_path, count=4)
    rows = list(csv.reader(table.open()))
    rows[2][1] = "masks/nowhere.png"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(FileNotFoundError, match=r"lists 1 mask file\(s\) \(column 'mask'\) that do not exist"):
        SegmentationCSVDataModule(table)


def test_balanced_sampling_and_ignore_index_out_of_range_are_refused(root):
    with pytest.raises(ValueError, match=r"`balanced_sampling=True` draws class-balanced images"):
        _data(root, balanced_sampling=True)
    with pytest.raises(ValueError, match=r"`ignore_index` must be an integer in 0\.\.65535"):
        _data(root, ignore_index=-1)
    shutil.rmtree(root / "train" / "images")
    with pytest.raises(FileNotFoundError, match=r"`root/train/images` directory .* does not exist"):
        _data(root)
