"""A user's CSV of photos with label sets, or with numbers, end to end through the real ``lit-transfer`` command.

For each task: a model of the wrong task is refused (exit 2, the option to set named) → ``fit`` → ``test --ckpt_path
best`` (the task's report in the run's ``test/`` folder) → ``predict`` (the CSV: label sets and per-label
probabilities, or values per target) → ONNX and TorchScript export, whose outputs on the predicted files match the
CSV and whose metadata carries the task, names, thresholds or target statistics.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_fixture import SHAPES, make_multilabel_csv, make_regression_csv
from test_user_path import _python, _run

REPO = Path(__file__).resolve().parents[2]
COMMON = [
    "--config",
    str(REPO / "recipes" / "defaults.yaml"),
    "--model.backbone",
    "test_resnet",
    "--data",
    "CSVDataModule",
    "--data.image_size",
    "32",
    "--data.batch_size",
    "16",
    "--data.num_workers",
    "0",
    "--data.train_transform",
    "none",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
TASKS = {
    "multilabel": [
        *("--model.task", "multilabel", "--data.train_csv", "train/multilabel.csv"),
        *("--data.label_column", "shapes", "--data.label_delimiter", "|"),
    ],
    "regression": [
        *("--model", "TransferRegressor", "--data.train_csv", "train/regression.csv"),
        *("--data.target_columns", "[brightness, shapes]"),
    ],
}
WRONG = {  # the same data with the default model: a multiclass TransferClassifier
    "multilabel": (TASKS["multilabel"][2:], "(`--model.task multilabel` on the command line)"),
    "regression": (
        TASKS["regression"][2:],
        "Use `TransferRegressor` (`--model TransferRegressor` on the command line)",
    ),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("tables")
    for split, count, seed in (("train", 40, 0), ("test", 12, 1)):
        make_multilabel_csv(cwd / split, count=count, seed=seed)
        make_regression_csv(cwd / split, count=count, seed=seed + 10)
    return cwd


@pytest.mark.parametrize(
    "task", ["multilabel", pytest.param("regression", marks=pytest.mark.slow)]
)  # the in-process twin of each: tests/e2e/test_bad_inputs.py
def test_a_model_of_another_task_is_refused_naming_the_option(workdir: Path, task: str) -> None:
    args, fix = WRONG[task]
    result = _run(workdir, "fit", *COMMON, *args, "--trainer.max_epochs", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert fix in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    assert not list(workdir.rglob("*.ckpt"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _predict_images(workdir: Path, task: str, ckpt: Path) -> torch.Tensor:
    """The predicted files, preprocessed as ``predict`` did: the DataModule's eval transform at the trained config."""
    from lit_transfer.data import CSVDataModule

    data_config = torch.load(ckpt, weights_only=True, map_location="cpu")["data_config"]
    options = (
        {"label_column": "shapes", "label_delimiter": "|"}
        if task == "multilabel"
        else {"target_columns": ["brightness", "shapes"]}
    )
    data = CSVDataModule(
        workdir / "train" / f"{task}.csv",
        predict_csv=workdir / "test" / f"{task}.csv",
        data_config=data_config,
        image_size=32,
        num_workers=0,
        **options,
    )
    data.setup("predict")
    return torch.cat([images for images, _ in data.predict_dataloader()])


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_fit_test_predict_export(workdir: Path, task: str) -> None:
    args = [*COMMON, *TASKS[task], "--trainer.default_root_dir", f"runs/{task}"]
    fitted = _run(workdir, "fit", *args, "--trainer.max_epochs", "2", timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    [best] = workdir.glob(f"runs/{task}/lightning_logs/version_*/checkpoints/best.ckpt")
    run = best.parent.parent
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "epochs.csv").is_file()
    monitor = "val_map" if task == "multilabel" else "val_mae"
    assert f"best checkpoint: {best.relative_to(workdir)} ({monitor}=" in fitted.stderr

    tested = _run(workdir, "test", *args, "--data.test_csv", f"test/{task}.csv", "--ckpt_path", "best")
    assert tested.returncode == 0, tested.stderr[-3000:]
    report = run / "test"
    assert not (report / "confusion_matrix.csv").exists()
    if task == "multilabel":
        ap = _rows(report / "label_ap.csv")
        assert [r["label"] for r in ap] == sorted(SHAPES)
        assert all(0 <= float(r["average_precision"]) <= 1 for r in ap if r["average_precision"])
        assert "average precision per label (macro mAP" in tested.stderr
    else:
        metrics = _rows(report / "regression.csv")
        assert [r["target"] for r in metrics] == ["brightness", "shapes"]
        assert all(float(r["mae"]) >= 0 and int(r["samples"]) == 12 for r in metrics)
        assert (report / "predicted_vs_true.png").stat().st_size > 0
        assert re.search(r"brightness: MAE=[\d.]+, RMSE=[\d.]+, R²=", tested.stderr)

    predicted = _run(workdir, "predict", *args, "--data.predict_csv", f"test/{task}.csv", "--ckpt_path", str(best))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = _rows(run / "predict" / "predictions.csv")
    assert [Path(r["file"]).name for r in rows] == [
        Path(r["path"]).name for r in _rows(workdir / "test" / f"{task}.csv")
    ]

    export = _python(
        workdir,
        "-c",
        "from lit_transfer.export import export_onnx, export_torchscript;"
        f"export_onnx({str(best)!r}, 'model.onnx', softmax=True); export_torchscript({str(best)!r}, 'model.pt')",
    )
    assert export.returncode == 0, export.stderr[-3000:]
    import onnx
    import onnxruntime

    meta = {p.key: p.value for p in onnx.load(str(workdir / "model.onnx")).metadata_props}
    assert meta["task"] == task
    images = _predict_images(workdir, task, best)
    (onnx_out,) = onnxruntime.InferenceSession(str(workdir / "model.onnx")).run(None, {"input": images.numpy()})
    extra = {"task": ""}
    scripted = torch.jit.load(str(workdir / "model.pt"), _extra_files=extra)
    assert extra["task"] == task.encode()
    if task == "multilabel":
        names = json.loads(meta["class_names"])
        thresholds = json.loads(meta["thresholds"])
        assert names == sorted(SHAPES) and len(thresholds) == 4 and meta["output"] == "probabilities"
        probs = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
        np.testing.assert_allclose(onnx_out, probs, atol=2e-5)  # the exported graph gives predict's probabilities
        for row, p in zip(rows, probs):  # each label set is the labels at or above their threshold
            expected = {n for n, value, t in zip(names, p, thresholds) if value >= t}
            assert set(filter(None, row["predicted"].split("|"))) == expected or any(
                abs(value - t) < 1e-5 for value, t in zip(p, thresholds)
            )
        logits = scripted(images)
        np.testing.assert_allclose(logits.sigmoid().detach().numpy(), probs, atol=2e-5)
    else:
        assert json.loads(meta["target_names"]) == ["brightness", "shapes"] and meta["output"] == "values"
        stats = json.loads(meta["target_stats"])
        values = np.array([[float(r["brightness"]), float(r["shapes"])] for r in rows])
        assert all(math.isfinite(v) for v in values.ravel())
        np.testing.assert_allclose(onnx_out, values, rtol=1e-4, atol=1e-3)  # original units, as predict writes
        np.testing.assert_allclose(scripted(images).detach().numpy(), values, rtol=1e-4, atol=1e-3)
        train = np.array(
            [[float(r["brightness"]), float(r["shapes"])] for r in _rows(workdir / "train/regression.csv")]
        )
        assert np.all(np.abs(np.array(stats["mean"]) - train.mean(axis=0)) < train.std(axis=0))  # training rows' stats


@pytest.mark.slow
@pytest.mark.ddp
def test_weight_averaging_under_two_process_ddp_then_predict(workdir: Path) -> None:
    """Lightning's EMAWeightAveraging on the command line, under ``ddp``: the checkpoint holds the average, the
    training weights and the thresholds tuned on the average's predictions, which ``predict`` then applies."""
    args = [*COMMON, *TASKS["multilabel"], "--trainer.default_root_dir", "runs/averaged"]
    ddp = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    averaging = ("--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "0.8")
    fitted = _run(workdir, "fit", *args, *ddp, *averaging, "--trainer.max_epochs", "2", timeout=300)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    [best] = workdir.glob("runs/averaged/lightning_logs/version_*/checkpoints/best.ckpt")
    checkpoint = torch.load(best, weights_only=True, map_location="cpu")
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged)
    thresholds = checkpoint["decision_thresholds"]
    assert len(thresholds) == len(SHAPES) and "decision_thresholds" not in averaged

    predicted = _run(workdir, "predict", *args, "--data.predict_csv", "test/multilabel.csv", "--ckpt_path", str(best))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = _rows(best.parent.parent / "predict" / "predictions.csv")
    names = sorted(SHAPES)
    for row in rows:  # each label set is the labels at or above the checkpoint's thresholds
        probs = [float(row[f"probability_{n}"]) for n in names]
        expected = {n for n, p, t in zip(names, probs, thresholds) if p >= t}
        assert set(filter(None, row["predicted"].split("|"))) == expected or any(
            abs(p - t) < 1e-5 for p, t in zip(probs, thresholds)
        )
