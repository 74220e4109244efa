"""CSVDataModule with label sets (multi-label) and numbers (regression): targets, splits, statistics, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_fixture import SHAPES, make_multilabel_csv, make_regression_csv
from PIL import Image

from lit_transfer.data import CSVDataModule


def _table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _images(root: Path, count: int) -> list[str]:
    for i in range(count):
        Image.new("RGB", (10, 10), (20 * i, 0, 0)).save(root / f"{i}.png")
    return [f"{i}.png" for i in range(count)]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_multilabel_csv(root, count=24)
    make_regression_csv(root, count=24)
    return root


def test_multilabel_batches_are_multi_hot_rows_of_the_csv(photos: Path) -> None:
    data = CSVDataModule(
        photos / "multilabel.csv", label_column="shapes", label_delimiter="|", image_size=32, num_workers=0
    )
    assert data.task == "multilabel" and data.class_names == sorted(SHAPES) and data.num_classes == 4
    data.setup("fit")
    train, val = data.train_dataset, data.val_dataset
    assert len(train) + len(val) == 24 and len(val) == round(24 * 0.2)
    assert not set(train.paths) & set(val.paths)
    rows = {str(photos / r["path"]): set(r["shapes"].split("|")) for r in _read(photos / "multilabel.csv")}
    for dataset in (train, val):
        for path, target in zip(dataset.paths, dataset.labels):
            assert {data.class_names[j] for j in np.flatnonzero(target)} == rows[path]
    expected = [np.mean([name in rows[p] for p in train.paths]) for name in data.class_names]
    assert data.label_frequencies == pytest.approx(expected)  # the rows that train, the held-out rows left out
    images, targets = next(iter(data.train_dataloader()))
    assert images.shape[1:] == (3, 32, 32) and targets.dtype == torch.float32 and targets.shape[1] == 4
    assert set(targets.unique().tolist()) <= {0.0, 1.0}


def test_multilabel_split_is_seeded_and_the_same_from_either_label_format(photos: Path, tmp_path: Path) -> None:
    rows = _read(photos / "multilabel.csv")
    flags = _table(
        photos / "flags.csv",
        ["path", *SHAPES],
        [[r["path"], *("1" if s in r["shapes"].split("|") else "0" for s in SHAPES)] for r in rows],
    )
    joined = CSVDataModule(photos / "multilabel.csv", label_column="shapes", label_delimiter="|", seed=3)
    columns = CSVDataModule(flags, label_columns=list(SHAPES), seed=3)
    assert columns.class_names == list(SHAPES)  # the order given
    joined.setup("fit")
    columns.setup("fit")
    order = [sorted(SHAPES).index(s) for s in SHAPES]
    assert joined.val_dataset.paths == columns.val_dataset.paths
    np.testing.assert_array_equal(joined.train_dataset.labels[:, order], columns.train_dataset.labels)
    other = CSVDataModule(photos / "multilabel.csv", label_column="shapes", label_delimiter="|", seed=4)
    other.setup("fit")
    assert other.val_dataset.paths != joined.val_dataset.paths


def test_regression_standardises_with_the_training_rows(photos: Path) -> None:
    rows = _read(photos / "regression.csv")
    val = _table(photos / "reg_val.csv", ["path", "brightness", "shapes"], [list(r.values()) for r in rows[:6]])
    train = _table(photos / "reg_train.csv", ["path", "brightness", "shapes"], [list(r.values()) for r in rows[6:]])
    data = CSVDataModule(train, val_csv=val, target_columns=["brightness", "shapes"], image_size=32, num_workers=0)
    assert data.task == "regression" and data.num_outputs == 2 and data.target_names == ["brightness", "shapes"]
    values = np.array([[float(r["brightness"]), float(r["shapes"])] for r in rows])
    assert data.target_stats["mean"] == pytest.approx(values[6:].mean(axis=0).tolist())
    assert data.target_stats["std"] == pytest.approx(values[6:].std(axis=0).tolist())
    data.setup("fit")
    mean, std = np.array(data.target_stats["mean"]), np.array(data.target_stats["std"])
    np.testing.assert_allclose(data.val_dataset.labels * std + mean, values[:6], rtol=1e-5, atol=1e-5)
    _, targets = next(iter(data.train_dataloader()))
    assert targets.dtype == torch.float32 and targets.shape[1] == 2

    raw = CSVDataModule(train, target_columns=["brightness"], standardize_targets=False, val_fraction=0.25)
    assert raw.target_stats is None
    raw.setup("fit")
    assert len(raw.val_dataset) == 4
    by_path = {str(photos / r["path"]): float(r["brightness"]) for r in rows}
    assert [v[0] for v in raw.val_dataset.labels] == pytest.approx([by_path[p] for p in raw.val_dataset.paths])


def test_stats_leave_out_the_held_out_rows(photos: Path) -> None:
    data = CSVDataModule(photos / "regression.csv", target_columns=["brightness"], val_fraction=0.25, seed=1)
    data.setup("fit")
    by_path = {str(photos / r["path"]): float(r["brightness"]) for r in _read(photos / "regression.csv")}
    trained = [by_path[p] for p in data.train_dataset.paths]
    assert len(trained) == 18 and data.target_stats["mean"] == pytest.approx([np.mean(trained)])


def test_empty_label_sets_only_when_allowed(tmp_path: Path) -> None:
    files = _images(tmp_path, 3)
    table = _table(tmp_path / "train.csv", ["path", "tags"], [[files[0], "a|b"], [files[1], ""], [files[2], "b"]])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), column 'tags': the row has no label.*allow_empty_labels"):
        CSVDataModule(table, label_column="tags", label_delimiter="|")
    data = CSVDataModule(table, label_column="tags", label_delimiter="|", allow_empty_labels=True, val_fraction=0)
    data.setup("fit")
    np.testing.assert_array_equal(data.train_dataset.labels, [[1, 1], [0, 0], [0, 1]])


AB = [["0.png", "a"], ["1.png", "b"]]
ROW2 = r"row 2 \(line 3\), column 'tags'"
BAD_TABLES = {
    "val-label-unseen": (
        AB,
        {"label_delimiter": "|", "val": [["2.png", "a|z"]]},
        r"`val_csv` '.*val\.csv', row 1 \(line 2\), column 'tags': label 'z' does not occur in `train_csv`",
    ),
    "flag-not-0-1": (
        [["0.png", "1", "0"], ["1.png", "yes", "2"]],
        {"label_columns": ["a", "b"]},
        r"row 2 \(line 3\), column 'b': '2' is not 0 or 1",
    ),
    "not-a-number": (
        [["0.png", "1.5"], ["1.png", "ten"]],
        {"target_columns": ["tags"]},
        rf"`train_csv` '.*train\.csv', {ROW2}: 'ten' is not a number",
    ),
    "nan": (
        [["0.png", "1.5"], ["1.png", "nan"]],
        {"target_columns": ["tags"]},
        rf"{ROW2}: 'nan' is not a finite number",
    ),
    "empty": ([["0.png", "1.5"], ["1.png", ""]], {"target_columns": ["tags"]}, rf"{ROW2}: is empty"),
    "constant": (
        [["0.png", "2"], ["1.png", "2"]],
        {"target_columns": ["tags"]},
        r"target column\(s\) \['tags'\] hold the same",
    ),
    "two-options": (
        AB,
        {"label_delimiter": "|", "target_columns": ["tags"]},
        r"only one of .*`label_delimiter` and `target_columns`",
    ),
    "balanced": (AB, {"label_delimiter": "|", "balanced_sampling": True}, r"`balanced_sampling=True`.*multilabel"),
    "missing-column": (AB, {"target_columns": ["size"]}, r"lacks column\(s\) \['size'\].*`target_columns`"),
}


@pytest.mark.parametrize(("rows", "options", "match"), list(BAD_TABLES.values()), ids=list(BAD_TABLES))
def test_bad_cells_name_the_file_row_and_column(tmp_path: Path, rows, options, match) -> None:
    _images(tmp_path, 3)
    header = ["path", "tags"] if len(rows[0]) == 2 else ["path", "a", "b"]
    train = _table(tmp_path / "train.csv", header, rows)
    val = options.pop("val", None)
    if val is not None:
        options["val_csv"] = _table(tmp_path / "val.csv", header, val)
    with pytest.raises(ValueError, match=match):
        CSVDataModule(train, label_column="tags", **options)


def test_multiclass_tables_keep_their_class_indices(tmp_path: Path) -> None:
    files = _images(tmp_path, 4)
    table = _table(tmp_path / "train.csv", ["path", "label"], [[f, c] for f, c in zip(files, "xyyx")])
    data = CSVDataModule(table, val_fraction=0.5, num_workers=0)
    assert data.task == "multiclass" and data.label_frequencies is None and data.target_stats is None
    data.setup("fit")
    assert sorted(data.train_dataset.labels) == [0, 1] and sorted(data.val_dataset.labels) == [0, 1]  # stratified
    _, targets = next(iter(data.train_dataloader()))
    assert targets.dtype == torch.int64
