"""ImageFolderDataModule and CSVDataModule: layout, early errors, stratified seeded split, predict paths."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_transfer.data import CSVDataModule, ImageFolderDataModule


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 14, 3), value, np.uint8)).save(path)
    return path


def _tree(root: Path, counts: dict[str, int], split: str = "train") -> Path:
    for cls, n in counts.items():
        for i in range(n):
            _png(root / split / cls / f"{cls}_{i}.png", value=10 * i)
    return root


def test_num_classes_before_setup(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(_tree(tmp_path, {"zebra": 2, "ant": 2, "moth": 2}), num_workers=0)
    assert dm.num_classes == 3 and dm.class_names == ["ant", "moth", "zebra"]
    assert dm.train_dataset is None  # nothing indexed yet


def test_stratified_seeded_split(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 20, "b": 10, "c": 5})
    dm = ImageFolderDataModule(root, num_workers=0, val_fraction=0.2, seed=1)
    dm.setup("fit")
    val_counts = Counter(dm.val_dataset.labels)
    assert val_counts == {0: 4, 1: 2, 2: 1}  # 20 % of every class
    assert len(dm.train_dataset) + len(dm.val_dataset) == 35
    assert not set(dm.train_dataset.paths) & set(dm.val_dataset.paths)
    same = ImageFolderDataModule(root, num_workers=0, val_fraction=0.2, seed=1)
    same.setup("fit")
    other = ImageFolderDataModule(root, num_workers=0, val_fraction=0.2, seed=2)
    other.setup("fit")
    assert same.val_dataset.paths == dm.val_dataset.paths
    assert other.val_dataset.paths != dm.val_dataset.paths


def test_explicit_val_and_test_folders(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 3, "b": 3})
    _tree(root, {"a": 2, "b": 1}, split="val")
    _tree(root, {"b": 2}, split="test")
    dm = ImageFolderDataModule(root, num_workers=0, image_size=8)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_dataset) == 6 and dm.val_dataset.labels == [0, 0, 1]
    assert dm.test_dataset.labels == [1, 1]
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [1, 1]


def test_predict_paths_follow_loader_order(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 2, "b": 2})
    for name in ("z.png", "sub/b.png", "a.png"):
        _png(root / "predict" / name)
    dm = ImageFolderDataModule(root, num_workers=0, image_size=8, batch_size=2)
    dm.setup("predict")
    assert dm.predict_paths == sorted(str(root / "predict" / n) for n in ("a.png", "sub/b.png", "z.png"))
    indices = [i for _, batch in dm.predict_dataloader() for i in batch.tolist()]
    assert indices == [0, 1, 2]
    elsewhere = tmp_path / "elsewhere"
    _png(elsewhere / "only.png")
    dm = ImageFolderDataModule(root, predict_dir=elsewhere, num_workers=0)
    dm.setup("predict")
    assert dm.predict_paths == [str(elsewhere / "only.png")]


def test_folder_errors_name_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"`root` directory .*nowhere.* does not exist\. Expected root/train"):
        ImageFolderDataModule(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=r"`root/train` directory .*flat/train"):
        ImageFolderDataModule(tmp_path / "flat")
    single = _tree(tmp_path / "single", {"only": 2})
    with pytest.raises(ValueError, match=r"has 1 class\(es\) \['only'\]; classification needs at least 2"):
        ImageFolderDataModule(single)
    empty = _tree(tmp_path / "empty", {"a": 2})
    (empty / "train" / "b").mkdir()
    (empty / "train" / "b" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"Class folder .*train/b' contains no image files"):
        ImageFolderDataModule(empty)
    stray = _tree(tmp_path / "stray", {"a": 1, "b": 1})
    _tree(stray, {"c": 1}, split="val")
    with pytest.raises(ValueError, match=r"class folders \['c'\] that are not in"):
        ImageFolderDataModule(stray)
    ok = _tree(tmp_path / "ok", {"a": 1, "b": 1})
    with pytest.raises(ValueError, match=r"`val_fraction` must be in \[0, 1\), got 1\.5"):
        ImageFolderDataModule(ok, val_fraction=1.5)
    with pytest.raises(ValueError, match=r"`val_fraction` must be in \[0, 1\), got False"):
        ImageFolderDataModule(ok, val_fraction=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`on_bad_image` must be 'error' or 'skip', got 'ignore'"):
        ImageFolderDataModule(ok, on_bad_image="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`in_chans` must be 1 or 3, got 4"):
        ImageFolderDataModule(ok, in_chans=4)


def _csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("file", "species")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_module_reads_labels_in_init(tmp_path: Path) -> None:
    rows = [{"file": f"img/{i}.png", "species": str(label)} for i, label in enumerate([10, 2, 2, 10, 2, 10])]
    for row in rows:
        _png(tmp_path / row["file"])
    train = _csv(tmp_path / "train.csv", rows)
    test = _csv(tmp_path / "test.csv", rows[:2])
    predict = _csv(tmp_path / "predict.csv", [{"file": "img/3.png"}, {"file": "img/0.png"}], columns=("file",))
    dm = CSVDataModule(
        train, test_csv=test, predict_csv=predict, path_column="file", label_column="species", num_workers=0
    )
    assert dm.class_names == ["2", "10"]  # numeric order, strings
    dm.setup("fit")
    dm.setup("test")
    dm.setup("predict")
    assert len(dm.train_dataset) + len(dm.val_dataset) == 6
    assert dm.test_dataset.labels == [1, 0]
    assert dm.predict_paths == [str(tmp_path / "img/3.png"), str(tmp_path / "img/0.png")]


def test_csv_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match=r"`train_csv` file .*missing\.csv' does not exist"):
        CSVDataModule(tmp_path / "missing.csv")
    bad_cols = _csv(tmp_path / "cols.csv", [{"file": "a.png", "species": "x"}])
    with pytest.raises(
        ValueError, match=r"lacks column\(s\) \['path', 'label'\]; its columns are \['file', 'species'\]"
    ):
        CSVDataModule(bad_cols)
    missing = _csv(
        tmp_path / "gone.csv",
        [{"file": "a.png", "species": "x"}, {"file": "b.png", "species": "y"}, {"file": "c.png", "species": "y"}],
    )
    with pytest.raises(FileNotFoundError, match=r"(?s)lists 2 file\(s\) that do not exist.*b\.png.*c\.png"):
        CSVDataModule(missing, path_column="file", label_column="species")
    one = _csv(tmp_path / "one.csv", [{"file": "a.png", "species": "x"}])
    with pytest.raises(ValueError, match=r"has 1 class\(es\) \['x'\]"):
        CSVDataModule(one, path_column="file", label_column="species")
    _png(tmp_path / "b.png")
    two = _csv(tmp_path / "two.csv", [{"file": "a.png", "species": "x"}, {"file": "b.png", "species": "y"}])
    unknown = _csv(tmp_path / "val.csv", [{"file": "a.png", "species": "z"}])
    with pytest.raises(ValueError, match=r"`val_csv` has labels \['z'\] that do not occur in `train_csv`"):
        CSVDataModule(two, val_csv=unknown, path_column="file", label_column="species")
