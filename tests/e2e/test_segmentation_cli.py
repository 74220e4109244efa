"""Segmentation through the real ``lit-transfer`` command on photo-like files with masks of mixed sizes.

fit → validate → test (per-class IoU and the sample grid in the run's ``test/``) → predict (a mask per image at its
own size in ``predict/masks/``, overlays) → export, in subprocesses; a colour mask ends the command with exit status 2
and the conversion as its last line; ``recipes/segmentation.yaml`` fits and reloads on the digit-mask canvases.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import RECIPES, TINY
from PIL import Image
from segmentation_fixture import CLASSES, make_segmentation_folder

from lit_transfer import TransferSegmenter
from lit_transfer.cli import TransferCLI
from lit_transfer.data import SegmentationFolderDataModule
from lit_transfer.data.masks import image_size
from lit_transfer.demo.segmentation_canvases import write_segmentation_canvases

LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
ARGS = [
    "--model",
    "TransferSegmenter",
    "--model.backbone",
    "test_resnet",
    "--model.pretrained",
    "false",
    "--model.decoder_channels",
    "16",
    "--data",
    "SegmentationFolderDataModule",
    "--data.root",
    "photos",
    "--data.image_size",
    "32",
    "--data.batch_size",
    "4",
    "--data.num_workers",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.default_root_dir",
    "runs",
]


def _run(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(LIT_TRANSFER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("segmentation")
    make_segmentation_folder(cwd / "photos", train=8, val=4, test=4, predict=3)
    return cwd


def test_a_colour_mask_ends_the_command_with_the_conversion(tmp_path: Path) -> None:
    make_segmentation_folder(tmp_path / "photos", train=4, val=2, test=0, predict=0)
    colour = np.zeros((48, 64, 3), np.uint8)
    colour[:, 32:] = (230, 60, 60)
    Image.fromarray(colour).save(tmp_path / "photos" / "train" / "masks" / "train_000.png")
    result = _run(tmp_path, "fit", *ARGS, "--trainer.max_epochs", "1")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "train_000.png: is a colour image" in result.stderr and "Image.fromarray(index)" in last
    assert "Traceback" not in result.stderr and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_fit_test_predict_export_on_photos_with_masks(workdir: Path) -> None:
    fit = _run(workdir, "fit", *ARGS, "--trainer.max_epochs", "3", "--model.loss", "ce+dice")
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = workdir / "runs" / "lightning_logs" / "version_0"
    best = run / "checkpoints" / "best.ckpt"
    saved = torch.load(best, weights_only=True)
    assert saved["hyper_parameters"]["class_names"] == list(CLASSES) and "val_miou" in str(saved["callbacks"])

    validate = _run(workdir, "validate", *ARGS, "--ckpt_path", "best")
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert "val_miou" in validate.stdout and "val_iou_disc" in validate.stdout

    test = _run(workdir, "test", *ARGS, "--ckpt_path", "best")
    assert test.returncode == 0, test.stderr[-3000:]
    rows = list(csv.DictReader((run / "test" / "per_class_iou.csv").open()))
    assert [r["class"] for r in rows] == list(CLASSES) and all(0 <= float(r["iou"]) <= 1 for r in rows)
    assert (run / "test" / "per_class_iou.png").is_file() and (run / "test" / "segmentation_samples.png").is_file()

    predict = _run(workdir, "predict", *ARGS, "--ckpt_path", "best")
    assert predict.returncode == 0, predict.stderr[-3000:]
    images = sorted((workdir / "photos" / "predict").iterdir())
    masks = sorted((run / "predict" / "masks").glob("*.png"))
    assert [m.stem for m in masks] == [p.stem for p in images]
    for image, mask in zip(images, masks):
        values = np.asarray(Image.open(mask))
        assert values.shape == image_size(image)  # the image's own size, not the model's 32 px
        assert set(np.unique(values).tolist()) <= {0, 1, 2}
    assert len(list((run / "predict" / "overlays").glob("*.png"))) == len(images)

    export = subprocess.run(
        [sys.executable, "-c", f"from lit_transfer import export_onnx; export_onnx({str(best)!r}, 'model.onnx')"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    assert (workdir / "model.onnx").is_file()


def test_auto_on_photos_with_masks_trials_candidates_that_train_the_decoder(tmp_path: Path) -> None:
    make_segmentation_folder(tmp_path / "photos", train=8, val=4, test=0, predict=0)
    auto = "{policy: auto, min_val_samples: 2, trial_steps: 2, max_trial_share: null}"
    fit = _run(tmp_path, "fit", *ARGS, "--trainer.max_epochs", "2", "--model.freeze", auto)
    assert fit.returncode == 0, fit.stderr[-3000:]
    output = fit.stdout + fit.stderr
    assert "trains the decoder with the head" in output and "new_groups=2" in output
    [line] = [x for x in output.splitlines() if x.startswith("AutoFreeze:")]
    assert "validation loss on 4 samples" in line, line
    assert "decoder + head" in line and "layer4 + decoder + head" in line and "linear probe" not in line, line
    saved = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)
    assert saved["hyper_parameters"]["freeze"]["new_groups"] == 2


def test_segmentation_recipe_fits_and_reloads(tmp_path: Path) -> None:
    root = write_segmentation_canvases(tmp_path / "digit_masks", train=8, val=4, test=4, predict=2, cell=16)
    args = [
        "--config",
        str(RECIPES / "defaults.yaml"),
        "--config",
        str(RECIPES / "segmentation.yaml"),
        *TINY,
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        f"--data.root={root}",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--model.decoder_channels=16",
    ]
    cli = TransferCLI(args=args, run=False)
    model, datamodule = cli.model, cli.datamodule
    assert isinstance(model, TransferSegmenter) and isinstance(datamodule, SegmentationFolderDataModule)
    assert model.class_names == datamodule.class_names == ["background", "5", "6", "7", "8", "9"]
    assert model.hparams["freeze"]["schedule"] == {0: 2, 1: -1}  # freeze_unfreeze: the decoder with the head
    cli.trainer.fit(model, datamodule=datamodule)
    checkpoints = Path(cli.trainer.log_dir) / "checkpoints"
    assert (checkpoints / "best.ckpt").is_file()
    reloaded = TransferSegmenter.load_from_checkpoint(checkpoints / "last.ckpt")
    assert reloaded.hparams["class_names"] == model.class_names
    assert reloaded.state_dict().keys() == model.state_dict().keys()
