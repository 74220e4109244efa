"""PredictionCSVWriter: one CSV row per predicted image, in dataset order, with top-k classes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer

from lit_transfer import TransferClassifier
from lit_transfer.callbacks.prediction_writer import PredictionCSVWriter
from lit_transfer.cli import TransferCLI
from lit_transfer.cli.run_files import find_last_checkpoint
from lit_transfer.data import CSVDataModule, DigitsDataModule, ImageFolderDataModule

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    DigitsDataModule(classes=[3, 5, 8], image_size=16, val_fraction=0.5, test_fraction=0.5).write_image_folder(root)
    predict = root / "predict"
    predict.mkdir()
    for i, png in enumerate(sorted((root / "test").rglob("*.png"))[:7]):
        shutil.copy(png, predict / f"img_{i}.png")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_one_row_per_file_with_top_k(image_root: Path, tmp_path: Path) -> None:
    datamodule = ImageFolderDataModule(image_root, image_size=32, batch_size=3, num_workers=0)
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, class_names=datamodule.class_names)
    writer = PredictionCSVWriter(tmp_path / "out" / "preds.csv", top_k=2)
    trainer = Trainer(callbacks=[writer], logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.predict(model, datamodule=datamodule, return_predictions=False)

    rows = _rows(tmp_path / "out" / "preds.csv")
    assert [r["file"] for r in rows] == datamodule.predict_paths
    assert len(rows) == 7
    assert list(rows[0]) == [
        "file", "predicted", "probability", "top1_class", "top1_probability", "top2_class", "top2_probability"
    ]  # fmt: skip
    for row in rows:
        assert row["predicted"] == row["top1_class"] and row["predicted"] in {"3", "5", "8"}
        assert float(row["top1_probability"]) >= float(row["top2_probability"])
        assert 0.0 < float(row["probability"]) <= 1.0


def test_top_k_is_capped_and_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="top_k"):
        PredictionCSVWriter(top_k=0)
    assert PredictionCSVWriter().resolve_path(Trainer(default_root_dir=tmp_path, logger=False)) == (
        tmp_path / "predictions.csv"
    )


def test_cli_predict_writes_default_csv(image_root: Path, tmp_path: Path) -> None:
    common = [
        "--config",
        str(RECIPES / "defaults.yaml"),
        "--model.backbone=test_resnet",
        "--model.pretrained=false",
        "--data=ImageFolderDataModule",
        f"--data.root={image_root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    fit_only = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    TransferCLI(args=["fit", *common, *fit_only])
    ckpt = find_last_checkpoint(tmp_path)
    TransferCLI(args=["predict", *common, f"--ckpt_path={ckpt}"])
    rows = _rows(ckpt.parent.parent / "predict" / "predictions.csv")  # beside the run it evaluates
    assert len(rows) == 7
    assert all(Path(r["file"]).name.startswith("img_") for r in rows)
    assert {r["predicted"] for r in rows} <= {"3", "5", "8"}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five tiny images and a table of label sets joined by ``;`` and two numbers."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tagged")
    rows = ["path,tags,height,width"]
    for i, tags in enumerate(["a;b", "b", "c", "a;c", "b;c"]):
        Image.new("RGB", (20, 20), (40 * i, 90, 200 - 30 * i)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{tags},{10 + i},{3.5 * i + 1}")
    (root / "table.csv").write_text("\n".join(rows) + "\n")
    return root


def _predict(model: Any, data: Any, tmp_path: Path) -> list[dict[str, str]]:
    writer = PredictionCSVWriter(tmp_path / "preds.csv")
    Trainer(callbacks=[writer], logger=False, enable_progress_bar=False, default_root_dir=tmp_path).predict(
        model, datamodule=data, return_predictions=False
    )
    return _rows(tmp_path / "preds.csv")


def _outputs(model: Any, data: Any) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        parts = [model.predict_step(batch, 0) for batch in data.predict_dataloader()]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def test_multilabel_rows_hold_the_label_set_and_a_probability_per_label(tagged: Path, tmp_path: Path) -> None:
    table = tagged / "table.csv"
    data = CSVDataModule(
        table, predict_csv=table, label_column="tags", label_delimiter=";", image_size=32, num_workers=0
    )
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, task="multilabel", class_names=data.class_names
    )
    rows = _predict(model, data, tmp_path)
    assert list(rows[0]) == ["file", "predicted", "probability_a", "probability_b", "probability_c"]
    assert [r["file"] for r in rows] == data.predict_paths
    expected = _outputs(model, data)
    for row, probs, preds in zip(rows, expected["probs"], expected["preds"]):
        assert [float(row[f"probability_{n}"]) for n in "abc"] == pytest.approx(probs.tolist(), abs=1e-6)
        assert row["predicted"] == ";".join(n for n, on in zip("abc", preds.tolist()) if on)  # the data's delimiter


def test_binary_rows_hold_the_positive_class_probability(tagged: Path, tmp_path: Path) -> None:
    table = tagged / "binary.csv"
    table.write_text("path,label\n0.png,neg\n1.png,pos\n2.png,neg\n3.png,pos\n")
    data = CSVDataModule(table, predict_csv=table, image_size=32, num_workers=0)
    model = TransferClassifier(
        "test_resnet", num_classes=2, pretrained=False, task="binary", class_names=data.class_names
    )
    rows = _predict(model, data, tmp_path)
    assert list(rows[0]) == ["file", "predicted", "probability_pos"]
    expected = _outputs(model, data)
    assert [float(r["probability_pos"]) for r in rows] == pytest.approx(expected["probs"].tolist(), abs=1e-6)
    assert [r["predicted"] for r in rows] == [["neg", "pos"][int(p)] for p in expected["preds"]]


def test_regression_rows_hold_a_value_per_target_in_its_units(tagged: Path, tmp_path: Path) -> None:
    from lit_transfer.models import TransferRegressor

    table = tagged / "table.csv"
    data = CSVDataModule(table, predict_csv=table, target_columns=["height", "width"], image_size=32, num_workers=0)
    model = TransferRegressor(
        "test_resnet",
        num_outputs=2,
        pretrained=False,
        target_names=data.target_names,
        target_stats=data.target_stats,
    )
    rows = _predict(model, data, tmp_path)
    assert list(rows[0]) == ["file", "height", "width"]
    values = _outputs(model, data)["values"]
    assert [[float(r["height"]), float(r["width"])] for r in rows] == [
        pytest.approx(v, rel=1e-5) for v in values.tolist()
    ]
    mean = torch.tensor(data.target_stats["mean"])
    assert (values - mean).abs().max() < 10 * torch.tensor(data.target_stats["std"]).max()  # original units
