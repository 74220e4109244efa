"""The preprocessing a model was trained with travels in its checkpoint, into export and the docs' ONNX snippet."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from quiet import quiet_trainer

from lit_transfer.backbones import backbone_data_config
from lit_transfer.data import ImageFolderDataModule
from lit_transfer.data.decode import load_image
from lit_transfer.data.preprocessing import resolve_preprocessing
from lit_transfer.data.transforms import build_eval_transform
from lit_transfer.export import export_onnx
from lit_transfer.models import TransferClassifier

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def _photos(root: Path) -> None:
    """Three classes of small photo-like images of different sizes, and a predict folder of awkward files."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog", "fox")):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(4):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            pixels = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
            pixels[..., label] += 150  # a colour per class
            Image.fromarray(pixels).save(folder / f"{i}.png")
    predict = root / "predict"
    predict.mkdir()
    base = rng.integers(0, 255, (150, 230, 3), dtype=np.uint8)
    Image.fromarray(base).save(predict / "wide.jpg", quality=90)
    Image.fromarray(base[:, :120]).convert("L").save(predict / "gray.png")
    rgba = np.dstack([base[:70, :50], rng.integers(0, 255, (70, 50), dtype=np.uint8)])
    Image.fromarray(rgba.astype(np.uint8)).save(predict / "alpha.png")
    Image.fromarray(base[:60, :200]).convert("P").save(predict / "palette.png", transparency=0)
    sixteen = (rng.integers(0, 65535, (50, 45), dtype=np.uint16)).astype(np.uint16)
    Image.fromarray(sixteen).save(predict / "sixteen.png")
    Image.fromarray(base[:20, :24]).save(predict / "tiny.png")  # smaller than the model's input: upsampled


def _trainer(root: Path, **kwargs) -> Trainer:
    return quiet_trainer(root, **kwargs)


def _datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", SIZE)
    return ImageFolderDataModule(root, batch_size=4, num_workers=0, train_transform="none", **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ImageFolderDataModule]:
    """(photo root, checkpoint, DataModule) of a 2-step fit at 32 px on a photo folder written here."""
    root = tmp_path_factory.mktemp("photos")
    _photos(root)
    dm = _datamodule(root)
    torch.manual_seed(0)
    model = TransferClassifier(
        "test_resnet", num_classes=dm.num_classes, class_names=dm.class_names, pretrained=False, freeze="full_fine_tune"
    )
    trainer = _trainer(root, max_steps=2)
    trainer.fit(model, datamodule=dm)
    checkpoint = root / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    return root, checkpoint, dm


def test_checkpoint_records_the_datamodule_preprocessing(trained) -> None:
    _, checkpoint, dm = trained
    saved = torch.load(checkpoint, weights_only=True)["data_config"]  # plain values: a safe load reads them
    assert saved == dm.resolved_config.to_dict()
    assert saved["input_size"] == [3, SIZE, SIZE] and saved["mean"] == list(dm.resolved_config.mean)
    assert set(saved) == {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
    assert backbone_data_config("test_resnet")["input_size"] != saved["input_size"]  # not the backbone's 160 px
    assert TransferClassifier.load_from_checkpoint(checkpoint).data_config == saved


def test_export_uses_the_trained_size_and_normalisation(trained, tmp_path: Path) -> None:
    _, checkpoint, dm = trained
    path = export_onnx(checkpoint, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, SIZE, SIZE]
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["data_config"])
    assert meta == dm.resolved_config.to_dict()
    other = json.loads(
        {
            p.key: p.value
            for p in onnx.load(str(export_onnx(checkpoint, tmp_path / "48.onnx", image_size=48))).metadata_props
        }["data_config"]
    )
    assert other["input_size"] == [3, 48, 48]  # the metadata always describes the graph's input


def test_checkpoint_without_data_config_falls_back_to_the_backbone(trained, tmp_path: Path) -> None:
    _, checkpoint, _ = trained
    payload = torch.load(checkpoint, weights_only=True)
    del payload["data_config"]  # as written before the preprocessing was recorded
    old = tmp_path / "old.ckpt"
    torch.save(payload, old)
    model = TransferClassifier.load_from_checkpoint(old)
    assert model.data_config == backbone_data_config(model.backbone)
    session = ort.InferenceSession(str(export_onnx(old, tmp_path / "old.onnx")), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == backbone_data_config("test_resnet")["input_size"]


def _docs_snippet() -> str:
    text = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    section = text.split("## Running the ONNX file", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_docs_onnx_snippet_predicts_like_pytorch(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, checkpoint, _ = trained
    export_onnx(checkpoint, tmp_path / "model.onnx")
    files = sorted(str(p) for p in (root / "predict").iterdir())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["predict_onnx.py", *files])
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_docs_snippet(), "docs/export.md", "exec"), namespace)
    onnx_classes = dict(line.rsplit(" ", 1) for line in out.getvalue().splitlines())

    # PyTorch: the checkpoint's own preprocessing (what the CLI passes the DataModule), through Trainer.predict
    config = torch.load(checkpoint, weights_only=True)["data_config"]
    model = TransferClassifier.load_from_checkpoint(checkpoint)
    dm = _datamodule(root, data_config=config, image_size=None)
    batches = _trainer(tmp_path).predict(model, datamodule=dm)
    preds = torch.cat([b["preds"] for b in batches]).tolist()
    torch_classes = {path: model.class_names[p] for path, p in zip(dm.predict_paths, preds)}
    assert onnx_classes == torch_classes and len(torch_classes) == 6, (onnx_classes, torch_classes)

    # and the snippet's input is the evaluation transform's, value for value
    eval_transform = build_eval_transform(resolve_preprocessing(config))
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    for path in files:
        x = namespace["preprocess"](path, config)
        expected = eval_transform(image=load_image(path))["image"]
        assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32
        np.testing.assert_allclose(x[0], expected.numpy(), atol=1e-5, err_msg=path)
        (logits,) = session.run(None, {"input": x})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model.eval()(expected[None]), atol=1e-4, rtol=1e-4)


def test_evaluating_with_other_preprocessing_warns(trained, tmp_path: Path) -> None:
    root, checkpoint, _ = trained
    model = TransferClassifier.load_from_checkpoint(checkpoint)
    with pytest.warns(UserWarning, match=r"48x48 px.*differs from the one this model was trained with \(32x32 px"):
        _trainer(tmp_path).validate(model, datamodule=_datamodule(root, image_size=48))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        _trainer(tmp_path).validate(model, datamodule=_datamodule(root))  # the trained size: no warning
    fresh = TransferClassifier("test_resnet", num_classes=3, class_names=["cat", "dog", "fox"], pretrained=False)
    with pytest.warns(UserWarning, match=r"64x64 px.*the checkpoint was trained with \(32x32 px.*image_size=32"):
        _trainer(tmp_path).validate(fresh, datamodule=_datamodule(root, image_size=64), ckpt_path=checkpoint)
