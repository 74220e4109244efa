"""The range test's head steps on cached backbone features: the same curve as steps on images, and when it applies."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from quiet import QUIET

from lit_transfer import FreezeUnfreeze, GroupLRFinder, TransferClassifier, find_lr
from lit_transfer.data import DigitsDataModule


def _data(image_size: int = 16) -> DigitsDataModule:
    """Unaugmented scans: a sample's input, and so its features, are the same every epoch."""
    return DigitsDataModule(
        classes=[0, 1, 2], shots_per_class=8, image_size=image_size, batch_size=8, num_workers=0, train_transform="none"
    )


def _model(freeze: object = None, drop_rate: float = 0.0, backbone: str = "test_resnet") -> TransferClassifier:
    L.seed_everything(7)
    return TransferClassifier(
        backbone,
        num_classes=3,
        pretrained=False,
        freeze=freeze if freeze is not None else FreezeUnfreeze(unfreeze_at_epoch=1),
        layer_decay=0.5,
        drop_rate=drop_rate,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
    )


@pytest.mark.parametrize("drop_rate", [0.0, 0.3])
def test_cached_features_give_the_curve_of_steps_on_images(drop_rate: float) -> None:
    """12 steps span 4 epochs of 3 batches: the cached path serves the same batches, in the same order, every epoch."""
    options = {"num_steps": 12, "min_lr": 1e-4, "max_lr": 1.0, "diverge_factor": None}
    on_images = find_lr(_model(drop_rate=drop_rate), _data(), cache_features=False, **options)
    on_features = find_lr(_model(drop_rate=drop_rate), _data(), **options)  # default: decide
    assert not on_images.cached_features and on_features.cached_features
    assert on_features.lrs == on_images.lrs
    assert on_features.losses == pytest.approx(on_images.losses, rel=1e-4, abs=1e-5)
    assert on_features.suggestions == on_images.suggestions
    assert "cached backbone features" in on_features.summary()


@pytest.mark.parametrize("drop_rate", [0.0, 0.3])
def test_a_head_with_its_own_layers_steps_on_trunk_features(drop_rate: float) -> None:
    """ConvNeXt's head group holds `head.norm` too: the steps run `forward_head` on cached `forward_features`."""
    options = {"num_steps": 12, "min_lr": 1e-4, "max_lr": 1.0, "diverge_factor": None}
    model = _model(drop_rate=drop_rate, backbone="test_convnext")
    on_images = find_lr(model, _data(32), cache_features=False, **options)
    on_features = find_lr(_model(drop_rate=drop_rate, backbone="test_convnext"), _data(32), **options)
    assert not on_images.cached_features and on_features.cached_features
    assert on_features.losses == pytest.approx(on_images.losses, rel=1e-4, abs=1e-5)
    assert on_features.suggestions == on_images.suggestions
    assert model.__dict__.get("_features_as_inputs") is None
    assert model.outputs_of(torch.zeros(2, 3, 32, 32)).shape == (2, 3)  # images again after the test


def test_steps_on_images_in_a_model_that_caches_its_own_probe() -> None:
    """A model with `cache_features=True` whose probe trains ConvNeXt's head norm: images stay images in the test."""
    options = {"num_steps": 8, "min_lr": 1e-4, "max_lr": 1.0, "diverge_factor": None}

    def model() -> TransferClassifier:
        L.seed_everything(7)
        return TransferClassifier(
            "test_convnext", num_classes=3, pretrained=False, freeze="linear_probe", cache_features=True
        )

    on_images = find_lr(model(), _data(32), cache_features=False, **options)
    on_features = find_lr(model(), _data(32), cache_features=True, **options)
    assert not on_images.cached_features and on_features.cached_features
    assert on_features.losses == pytest.approx(on_images.losses, rel=1e-4, abs=1e-5)


def test_the_cached_test_leaves_the_model_as_it_was() -> None:
    model = _model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    result = find_lr(model, _data(), num_steps=10, cache_features=True)
    assert result.cached_features
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.__dict__.get("_features_as_inputs")  # 2-D inputs are features only inside the test
    with pytest.raises(RuntimeError):
        model.outputs_of(torch.zeros(2, 8))  # a 2-D batch goes to the backbone again, which refuses it


def test_a_first_phase_that_trains_the_backbone_steps_on_images() -> None:
    model = _model(freeze="full_fine_tune")
    assert not find_lr(model, _data(), num_steps=6).cached_features
    with pytest.raises(ValueError, match=r"`cache_features` is true, but the first phase of this TransferClassifier"):
        find_lr(_model(freeze="full_fine_tune"), _data(), num_steps=6, cache_features=True)


def test_callback_refuses_a_cache_flag_that_is_not_a_bool() -> None:
    with pytest.raises(ValueError, match="`cache_features` must be true, false or null"):
        GroupLRFinder(cache_features="yes")  # type: ignore[arg-type]


def test_callback_on_cached_features_trains_as_configured(tmp_path: Path) -> None:
    """The callback's cached test leaves no trace in the fit that follows (its suggestion applied as usual)."""
    model = _model()
    finder = GroupLRFinder(num_steps=8, min_lr=1e-4, apply=False)
    L.Trainer(**{**QUIET, "max_epochs": 2, "callbacks": [finder], "default_root_dir": tmp_path}).fit(model, _data())
    assert (tmp_path / "lr_find" / "loss_vs_lr.csv").is_file()  # the curve goes to the run's folder
    assert finder.result is not None and finder.result.cached_features
    plain = _model()
    L.Trainer(**{**QUIET, "max_epochs": 2}).fit(plain, _data())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))


@pytest.mark.slow  # over ~15 s on 2 cores
def test_cli_lr_find_steps_on_cached_features_unless_told_not_to(tmp_path: Path) -> None:
    """`lit-transfer lr-find` on the defaults recipe (freeze-unfreeze): cached by default; a bad flag exits 2."""
    from test_lr_finder import TINY, _env  # the CLI helpers of the finder's own tests

    def lr_find(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "lit-transfer"), "lr-find", *TINY, "--num_steps", "8", *extra]
        return subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)

    cached = lr_find()
    assert cached.returncode == 0, cached.stderr[-3000:]
    assert "first phase trains 1/" in cached.stdout and "(head steps on cached backbone features)" in cached.stdout
    on_images = lr_find("--cache_features", "false")
    assert on_images.returncode == 0, on_images.stderr[-3000:]
    assert "first phase trains 1/" in on_images.stdout and "cached backbone features" not in on_images.stdout
    refused = lr_find("--model.freeze", "full_fine_tune", "--cache_features", "true")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("The LR range test's `cache_features` is true, but")


def test_cli_lr_find_on_photos_caches_a_convnext_head_with_its_norm(tmp_path: Path) -> None:
    """The real command on a folder of photos: ConvNeXt's head group trains its norm too, and the steps are cached."""
    from photo_fixture import make_photo_folder
    from test_lr_finder import REPO, _env

    make_photo_folder(tmp_path / "photos", per_class=8, bad_files=False)
    command = [
        str(Path(sys.executable).parent / "lit-transfer"),
        "lr-find",
        "--config",
        str(REPO / "recipes" / "defaults.yaml"),
        "--model.backbone",
        "test_convnext",
        "--data",
        "ImageFolderDataModule",
        "--data.root",
        "photos",
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
        "--data.train_transform",
        "none",
        "--num_steps",
        "8",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(head steps on cached backbone features)" in result.stdout, result.stdout[-3000:]
    assert "--model.optimizer.init_args.lr=" in result.stdout
