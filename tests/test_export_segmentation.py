"""Export of a TransferSegmenter: per-pixel scores at the training size, names and preprocessing in the metadata,
and the same classes as ``predict_step`` (ONNX through onnxruntime, TorchScript reloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from segmentation_fixture import CLASSES, make_segmentation_folder
from task_helpers import fit_trainer

from lit_transfer import TransferSegmenter, export_onnx, export_torchscript
from lit_transfer.data import SegmentationFolderDataModule


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegmentationFolderDataModule]:
    out = tmp_path_factory.mktemp("export")
    data = SegmentationFolderDataModule(
        make_segmentation_folder(out / "photos", train=4, val=2, test=0, predict=2),
        image_size=32,
        batch_size=2,
        num_workers=0,
        train_transform="none",
    )
    torch.manual_seed(0)
    model = TransferSegmenter(
        "test_resnet", num_classes=3, class_names=list(CLASSES), pretrained=False, decoder_channels=16
    )
    trainer = fit_trainer(out, 1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(out / "model.ckpt")
    return out / "model.ckpt", data


def _predict(checkpoint: Path, images: torch.Tensor) -> dict[str, torch.Tensor]:
    model = TransferSegmenter.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        return model.predict_step(images, 0)


def _images(data: SegmentationFolderDataModule) -> torch.Tensor:
    data.setup("predict")
    return next(iter(data.predict_dataloader()))[0]


def test_onnx_gives_predict_steps_classes_with_names_and_preprocessing(trained, tmp_path):
    checkpoint, data = trained
    path = export_onnx(checkpoint, tmp_path / "model.onnx", softmax=True)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["task"] == "segmentation" and json.loads(meta["class_names"]) == list(CLASSES)
    assert json.loads(meta["data_config"])["input_size"] == [3, 32, 32] and "letterbox" in meta["preprocessing"]
    images = _images(data)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"input": images.numpy()})
    expected = _predict(checkpoint, images)
    assert probs.shape == (len(images), 3, 32, 32)
    assert np.allclose(probs, expected["probs"].numpy(), atol=1e-4)
    assert (probs.argmax(axis=1) == expected["preds"].numpy()).mean() > 0.999


@pytest.mark.parametrize(("backbone", "decoder"), [("test_resnet", "fpn"), ("test_convnext", "unet")])
def test_torchscript_and_onnx_of_each_decoder_give_the_logits(backbone, decoder, tmp_path):
    model = TransferSegmenter(backbone, num_classes=4, pretrained=False, decoder=decoder, decoder_channels=64).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
    scripted = torch.jit.load(str(export_torchscript(model, tmp_path / "model.pt", image_size=64)))
    assert torch.allclose(scripted(images), logits, atol=1e-4)
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "model.onnx", image_size=64)))
    assert np.allclose(session.run(None, {"input": images.numpy()})[0], logits.numpy(), atol=1e-4)
