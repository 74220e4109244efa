"""DigitsDataModule: class subsets, few-shot draws, the fixed test split, the image-folder round trip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_transfer.data import DigitsDataModule, ImageFolderDataModule
from lit_transfer.data.digits import digit_arrays


def _setup(**kwargs: object) -> DigitsDataModule:
    dm = DigitsDataModule(**kwargs)  # type: ignore[arg-type]
    dm.setup()
    return dm


def test_embedded_data_is_the_real_digits() -> None:
    images, digits = digit_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255 and Counter(digits.tolist())[0] == 178


def test_class_subsets_remap_labels_and_names() -> None:
    source, target = _setup(classes=[0, 1, 2, 3, 4]), _setup(classes=[5, 6, 7, 8, 9])
    assert source.class_names == ["0", "1", "2", "3", "4"] and target.class_names == ["5", "6", "7", "8", "9"]
    assert source.num_classes == target.num_classes == 5
    _, digits = digit_arrays()
    for dm, offset in ((source, 0), (target, 5)):
        for split in ("train", "val", "test"):
            idx = dm.split_indices[split]
            assert sorted(set(digits[idx].tolist())) == list(range(offset, offset + 5))
            assert getattr(dm, f"{split}_dataset").labels == (digits[idx] - offset).tolist()
    assert not set(source.split_indices["test"]) & set(target.split_indices["test"])


def test_test_split_is_fixed_and_stratified() -> None:
    full = _setup()
    test = full.split_indices["test"]
    assert len(test) == pytest.approx(0.25 * 1797, abs=5)
    _, digits = digit_arrays()
    per_class = Counter(digits[test].tolist())
    totals = Counter(digits.tolist())
    for digit in range(10):
        assert per_class[digit] == pytest.approx(0.25 * totals[digit], abs=1)
    for kwargs in ({"shots_per_class": 5}, {"seed": 3}, {"shots_per_class": 1, "seed": 9}):
        assert _setup(**kwargs).split_indices["test"] == test
    subset = _setup(classes=[3, 7], shots_per_class=2, seed=5)
    assert subset.split_indices["test"] == [i for i in test if digits[i] in (3, 7)]


def test_splits_disjoint_and_cover_everything() -> None:
    dm = _setup()
    parts = [set(dm.split_indices[s]) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == 1797 and set.union(*parts) == set(range(1797))


def test_few_shot_sampling_is_seeded() -> None:
    a, b, c = _setup(shots_per_class=5, seed=1), _setup(shots_per_class=5, seed=1), _setup(shots_per_class=5, seed=2)
    assert len(a.train_dataset) == 50
    assert Counter(a.train_dataset.labels) == dict.fromkeys(range(10), 5)
    assert a.split_indices["train"] == b.split_indices["train"] != c.split_indices["train"]
    assert a.split_indices["val"] == c.split_indices["val"]  # validation does not move with the few-shot seed
    full_train = set(_setup().split_indices["train"])
    assert set(a.split_indices["train"]) <= full_train


@pytest.mark.parametrize("in_chans", [1, 3])
def test_tensors_shape_and_range(in_chans: int) -> None:
    dm = _setup(classes=[1, 2], image_size=24, in_chans=in_chans, batch_size=16)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape == (16, in_chans, 24, 24)
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1}
    # ImageNet-normalised: background (0) is about -2, ink (255) up to about +2.6
    assert images.min() < -1.5 and images.max() > 1.5


def test_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`classes` must be at least 2 distinct digits in 0-9, got \[3, 3\]"):
        DigitsDataModule(classes=[3, 3])
    with pytest.raises(ValueError, match=r"got \[10, 1\]"):
        DigitsDataModule(classes=[10, 1])
    with pytest.raises(ValueError, match="`shots_per_class` must be a positive int or None, got 0"):
        DigitsDataModule(shots_per_class=0)


def test_write_image_folder_round_trip(tmp_path: Path) -> None:
    dm = _setup(classes=[5, 6, 7, 8, 9], shots_per_class=3, image_size=16)
    root = Path(dm.write_image_folder(tmp_path / "digits"))
    assert sorted(p.name for p in (root / "train").iterdir()) == ["5", "6", "7", "8", "9"]
    assert len(list((root / "train").rglob("*.png"))) == 15
    folder = ImageFolderDataModule(root, image_size=16, num_workers=0, train_transform="none")
    folder.setup("fit")
    folder.setup("test")
    assert folder.class_names == dm.class_names and len(folder.test_dataset) == len(dm.test_dataset)
    # the same scans through the same eval pipeline give identical tensors
    by_index = {int(Path(p).stem): i for i, p in enumerate(folder.test_dataset.paths)}
    for position, index in enumerate(dm.split_indices["test"][:20]):
        from_memory, label_memory = dm.test_dataset[position]
        from_disk, label_disk = folder.test_dataset[by_index[index]]
        assert label_memory == label_disk
        torch.testing.assert_close(from_memory, from_disk, rtol=0, atol=0)
