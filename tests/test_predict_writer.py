"""PredictionCSVWriter: one CSV row per predicted image, in dataset order, with top-k classes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lit_transfer import TransferClassifier
from lit_transfer.cli import TransferCLI, find_last_checkpoint
from lit_transfer.data import DigitsDataModule, ImageFolderDataModule
from lit_transfer.predict_writer import PredictionCSVWriter

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


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
