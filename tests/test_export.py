from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from quiet import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer.export import export_onnx, export_torchscript, load_for_export
from lit_transfer.models import TransferClassifier

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of a 1-step fit of a tiny classifier."""
    root = tmp_path_factory.mktemp("export")
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune", class_names=["a", "b", "c"]
    )
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    trainer = quiet_trainer(root, max_steps=1)
    trainer.fit(model, DataLoader(data, batch_size=4))
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _reference(checkpoint: Path, x: torch.Tensor) -> torch.Tensor:
    model = TransferClassifier.load_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        return model(x)


def test_onnx_matches_pytorch_with_dynamic_batch(checkpoint: Path, tmp_path: Path) -> None:
    path = export_onnx(checkpoint, tmp_path / "out" / "model.onnx")
    size = TransferClassifier.load_from_checkpoint(checkpoint).data_config["input_size"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_inputs()[0].shape[1:] == size
    for n in (1, 5):
        x = torch.randn(n, *size)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), _reference(checkpoint, x), atol=1e-4, rtol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == ["a", "b", "c"]
    assert json.loads(meta["data_config"])["input_size"] == size
    assert meta["output"] == "logits"


def test_onnx_softmax_and_image_size(checkpoint: Path, tmp_path: Path) -> None:
    path = export_onnx(checkpoint, tmp_path / "model.onnx", image_size=(48, 64), softmax=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 48, 64)
    (probs,) = session.run(["probs"], {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(probs), _reference(checkpoint, x).softmax(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(probs).sum(-1), torch.ones(3))


def test_a_vit_with_dynamic_img_size_exports_at_one_size_with_the_models_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)  # a ViT whose embeddings are made for 160 px, resampled at each forward pass
    model = TransferClassifier("test_vit3", num_classes=3, pretrained=False, dynamic_img_size=True).eval()
    trained_embeddings = model.backbone.pos_embed.detach().clone()
    for size in ((32, 32), (48, 64)):
        path = export_onnx(model, tmp_path / f"vit_{size[0]}.onnx", image_size=size)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[2:] == list(size)
        x = torch.randn(2, 3, *size)
        (logits,) = session.run(["logits"], {"input": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)
    assert model.backbone.dynamic_img_size and torch.equal(model.backbone.pos_embed, trained_embeddings)  # a copy


@pytest.mark.parametrize("export", [export_onnx, export_torchscript], ids=["onnx", "torchscript"])
def test_a_size_the_model_does_not_take_is_refused_naming_image_size(tmp_path: Path, export) -> None:
    model = TransferClassifier("test_vit3", num_classes=3, pretrained=False, img_size=32)  # a strict ViT at 32 px
    with pytest.raises(ValueError, match=r"does not take 48 x 48 inputs, `image_size`.*takes 32 x 32 only"):
        export(model, tmp_path / "vit.out", image_size=48)
    with pytest.raises(ValueError, match=r"does not take 36 x 36 inputs.*multiple of its patch size"):
        export(
            TransferClassifier("test_vit3", num_classes=3, pretrained=False, dynamic_img_size=True),
            tmp_path / "d",
            image_size=36,
        )
    assert not list(tmp_path.iterdir())
    assert export(model, tmp_path / "vit.out", image_size=32).is_file()  # the size it takes


@pytest.mark.parametrize("dynamic", [False, True], ids=["strict", "dynamic"])
def test_a_vit_built_with_img_size_exports_at_that_size_before_any_fit(tmp_path: Path, dynamic: bool) -> None:
    """Its data config names the size it was built for, not the architecture's default, which a strict one refuses."""
    model = TransferClassifier("test_vit3", num_classes=3, pretrained=False, img_size=32, dynamic_img_size=dynamic)
    assert model.data_config["input_size"] == [3, 32, 32]
    path = export_onnx(model.eval(), tmp_path / "vit.onnx")  # no `image_size`: the model's own
    session = ort.InferenceSession(str(path))
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["data_config"])["input_size"] == [3, 32, 32]


def test_onnx_of_an_eva_with_dynamic_img_size_says_to_export_torchscript(tmp_path: Path) -> None:
    """EVA's rotary embeddings are not converted to one size: the ONNX failure names the way out, which works."""
    torch.manual_seed(0)
    model = TransferClassifier(
        "eva02_tiny_patch14_224", num_classes=3, pretrained=False, img_size=56, dynamic_img_size=True
    ).eval()
    for size in (56, 70):  # its own size (a graph onnxruntime refuses) and another (a resize ONNX lacks)
        with pytest.raises(
            RuntimeError, match=r"the Eva backbone built with `dynamic_img_size` failed.*export_torchscript"
        ):
            export_onnx(model, tmp_path / "eva.onnx", image_size=size)
    assert not (tmp_path / "eva.onnx").exists()
    path = export_torchscript(model, tmp_path / "eva.pt", image_size=70)
    x = torch.randn(3, 3, 70, 70)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(path)(x), model(x), atol=1e-4, rtol=1e-4)


def test_torchscript_matches_pytorch(checkpoint: Path, tmp_path: Path) -> None:
    path = export_torchscript(checkpoint, tmp_path / "model.pt", image_size=64)
    extra = {"class_names": "", "output": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), _extra_files=extra)
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), _reference(checkpoint, x), atol=1e-4, rtol=1e-4)
    assert json.loads(extra["class_names"]) == ["a", "b", "c"] and extra["output"] in ("logits", b"logits")


def test_plain_module_needs_image_size(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="image_size"):
        export_onnx(net, tmp_path / "net.onnx")
    path = export_onnx(net, tmp_path / "net.onnx", image_size=16)
    assert path.is_file()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt"):
        load_for_export(tmp_path / "nope.ckpt")


def test_model_fit_on_digits_exports_at_its_trained_size(tmp_path: Path) -> None:
    """Fit at 32 px on the digits (the backbone's own size is 160): the ONNX input and metadata say 32 px."""
    from lit_transfer.data import DigitsDataModule

    dm = DigitsDataModule(
        classes=[0, 1, 2], shots_per_class=2, image_size=32, batch_size=6, data_config={"mean": [0.4]}
    )
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "digits.ckpt")
    path = export_onnx(tmp_path / "digits.ckpt", tmp_path / "digits.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["data_config"])
    assert meta["input_size"] == [3, 32, 32]
    assert meta["mean"] == [0.4, 0.4, 0.4] and meta["std"] == list(dm.resolved_config.std)


def _fit_once(model: torch.nn.Module, targets: torch.Tensor, root: Path) -> Path:
    trainer = quiet_trainer(root, max_steps=1)
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(len(targets), 3, 32, 32), targets), batch_size=4))
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"


def test_multilabel_export_gives_sigmoid_probabilities_and_carries_thresholds(tmp_path: Path) -> None:
    model = TransferClassifier(
        "test_resnet", num_classes=3, pretrained=False, task="multilabel", class_names=["x", "y", "z"], threshold=0.3
    )
    ckpt = _fit_once(model, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]), tmp_path)
    onnx_path = export_onnx(ckpt, tmp_path / "ml.onnx", image_size=32, softmax=True)
    pt_path = export_torchscript(ckpt, tmp_path / "ml.pt", image_size=32)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["task"] == "multilabel" and meta["output"] == "probabilities"
    assert json.loads(meta["class_names"]) == ["x", "y", "z"] and json.loads(meta["thresholds"]) == [0.3] * 3
    reloaded = load_for_export(ckpt)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = reloaded.predict_step((x,), 0)
    (probs,) = ort.InferenceSession(str(onnx_path)).run(["probs"], {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(probs), expected["probs"], atol=1e-5, rtol=1e-4)
    assert torch.equal((torch.from_numpy(probs) >= 0.3).long(), expected["preds"].long())
    extra = {"task": "", "thresholds": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        logits = torch.jit.load(str(pt_path), _extra_files=extra)(x)
    torch.testing.assert_close(logits.sigmoid(), expected["probs"], atol=1e-5, rtol=1e-4)
    assert extra["task"] == b"multilabel" and json.loads(extra["thresholds"]) == [0.3] * 3


def test_regression_export_returns_values_in_original_units(tmp_path: Path) -> None:
    from lit_transfer.models import TransferRegressor

    stats = {"mean": [100.0, -2.0], "std": [15.0, 0.5]}
    model = TransferRegressor(
        "test_resnet", num_outputs=2, pretrained=False, target_names=["age", "score"], target_stats=stats
    )
    ckpt = _fit_once(model, torch.randn(4, 2), tmp_path)
    assert isinstance(load_for_export(ckpt), TransferRegressor)
    onnx_path = export_onnx(
        ckpt, tmp_path / "reg.onnx", image_size=32, softmax=True
    )  # `softmax` has no effect on values
    pt_path = export_torchscript(ckpt, tmp_path / "reg.pt", image_size=32)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["task"] == "regression" and meta["output"] == "values"
    assert json.loads(meta["target_names"]) == ["age", "score"] and json.loads(meta["target_stats"]) == stats
    reloaded = load_for_export(ckpt)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = reloaded.predict_step((x,), 0)["values"]
        raw = reloaded(x)
    torch.testing.assert_close(expected, raw * torch.tensor(stats["std"]) + torch.tensor(stats["mean"]))
    (values,) = ort.InferenceSession(str(onnx_path)).run(["values"], {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(values), expected, atol=1e-3, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.testing.assert_close(torch.jit.load(str(pt_path))(x), expected, atol=1e-3, rtol=1e-4)


def test_a_check_without_onnxruntime_is_refused_naming_the_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as on an install without the extra
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    with pytest.raises(ImportError, match=r"needs onnxruntime: `pip install 'lit-transfer\[export\]'`.*check=False"):
        export_onnx(model, tmp_path / "model.onnx", image_size=32)
    assert not (tmp_path / "model.onnx").exists()
    assert export_onnx(model, tmp_path / "model.onnx", image_size=32, check=False).is_file()  # the check alone needs it


class _Announcing(torch.nn.Module):
    """A network whose forward warns: a warning of the user's, which export must not hide."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TransferClassifier("test_resnet", num_classes=3, pretrained=False).backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("a warning of the user's model", UserWarning, stacklevel=2)
        return self.net(x)


@pytest.mark.parametrize("export", [export_onnx, export_torchscript])
def test_export_shows_warnings_other_than_the_exporters_own(tmp_path: Path, export) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(_Announcing(), tmp_path / "model.bin", image_size=32)
    messages = [str(w.message) for w in caught]
    assert "a warning of the user's model" in messages
    assert not any("legacy TorchScript-based ONNX export" in m or "is deprecated" in m for m in messages), messages
