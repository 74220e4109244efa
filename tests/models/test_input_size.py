"""Backbones built for one input size (a strict ViT): refused data of another size, built for it with `img_size`,
or made to take any size with `dynamic_img_size`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from cli_helpers import LIT_TRANSFER, RECIPES, TINY, photo_args
from photo_fixture import make_photo_folder
from quiet import quiet_trainer
from safetensors.torch import save_file
from segmentation_fixture import make_segmentation_folder
from timm.layers import resample_abs_pos_embed

from lit_transfer import TransferClassifier, TransferSegmenter
from lit_transfer.data import DigitsDataModule, SegmentationFolderDataModule
from lit_transfer.models.input_size import check_input_size, fixed_input_size, sized_timm_model

STRICT_VIT = "test_vit3"  # timm's tiny ViT whose patch embedding takes 160 px images only


def _digits() -> DigitsDataModule:
    return DigitsDataModule(classes=[0, 1, 2], image_size=32, batch_size=8, shots_per_class=8, seed=0)


def test_a_backbone_made_for_one_size_refuses_other_data_before_training(tmp_path):
    model = TransferClassifier(STRICT_VIT, num_classes=3, pretrained=False)
    assert fixed_input_size(model.backbone) == (160, 160)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    with pytest.raises(ValueError, match=r"'test_vit3' takes only 160x160 px .* gives 32x32 px") as error:
        trainer.fit(model, datamodule=_digits())
    assert "`img_size: 32`" in str(error.value) and "`image_size` to 160" in str(error.value)
    assert trainer.global_step == 0


def test_img_size_builds_it_for_the_data_with_the_pretrained_position_embeddings_resampled(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(STRICT_VIT, num_classes=10)  # "pretrained" at its own 160 px
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    model = TransferClassifier(STRICT_VIT, num_classes=3, pretrained=str(tmp_path / "vit.safetensors"), img_size=32)
    assert fixed_input_size(model.backbone) == (32, 32) and model.hparams["img_size"] == 32
    grid = model.backbone.patch_embed.grid_size
    expected = resample_abs_pos_embed(state["pos_embed"], list(grid), num_prefix_tokens=source.num_prefix_tokens)
    assert model.backbone.pos_embed.shape == expected.shape != state["pos_embed"].shape
    assert torch.allclose(model.backbone.pos_embed, expected)
    assert torch.equal(model.backbone.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=_digits())
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    trainer.save_checkpoint(tmp_path / "vit.ckpt")  # a reload builds the backbone at the same size
    again = TransferClassifier.load_from_checkpoint(tmp_path / "vit.ckpt", weights_only=True)
    assert fixed_input_size(again.backbone) == (32, 32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_window_attention_backbone_made_for_one_size_is_refused_before_training_and_built_with_img_size(tmp_path):
    # MaxViT has no strict patch embedding: its window partition fails deep in the first forward pass
    model = TransferClassifier("test_maxvit", num_classes=3, pretrained=False)
    assert fixed_input_size(model.backbone) is None and sized_timm_model(model.backbone) is model.backbone
    data = DigitsDataModule(classes=[0, 1, 2], image_size=64, batch_size=8, shots_per_class=8, seed=0)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    with pytest.raises(ValueError, match=r"'test_maxvit' is built for 160x160 px .* gives 64x64 px \(timm: ") as error:
        trainer.fit(model, datamodule=data)
    assert "`img_size: 64`" in str(error.value) and "`image_size` to 160" in str(error.value)
    assert trainer.global_step == 0
    assert model.backbone.training  # the check's eval-mode pass left the mode as it found it
    built = TransferClassifier("test_maxvit", num_classes=3, pretrained=False, img_size=64)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(built, datamodule=data)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])


def test_the_segmenter_builds_an_encoder_made_for_one_size_for_its_photos(tmp_path):
    photos = make_segmentation_folder(tmp_path / "photos", train=4, val=2, test=0, predict=0)
    data = SegmentationFolderDataModule(photos, image_size=64, batch_size=2, num_workers=0)
    kwargs = {"num_classes": 3, "pretrained": False, "decoder_channels": 32}
    refused = TransferSegmenter("test_maxvit", **kwargs)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    with pytest.raises(ValueError, match=r"'test_maxvit' is built for 160x160 px .* gives 64x64 px"):
        trainer.fit(refused, datamodule=data)
    assert trainer.global_step == 0
    model = TransferSegmenter("test_maxvit", img_size=64, **kwargs)
    assert model.hparams["img_size"] == 64
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_the_check_runs_the_features_of_one_blank_image_and_leaves_every_module_in_its_mode():
    model = TransferClassifier("test_maxvit", num_classes=3, pretrained=False)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    norms[0].eval()  # as a freezing policy leaves a frozen group's BatchNorm
    before = {name: t.clone() for name, t in model.backbone.state_dict().items()}
    data = SimpleNamespace(resolved_config=SimpleNamespace(size=(160, 160)))  # what the check reads of a DataModule
    check_input_size(model.backbone, "test_maxvit", data)  # its own size: passes
    assert not norms[0].training and all(m.training for m in norms[1:])
    assert all(torch.equal(before[n], t) for n, t in model.backbone.state_dict().items())  # no statistic moved
    with pytest.raises(ValueError, match="is built for 160x160 px"):
        check_input_size(model.backbone, "test_maxvit", SimpleNamespace(resolved_config=SimpleNamespace(size=(64, 64))))
    assert not norms[0].training and all(m.training for m in norms[1:])


def test_a_backbone_that_takes_any_size_is_never_run_by_the_check():
    assert sized_timm_model(timm.create_model("test_resnet")) is None
    assert sized_timm_model(TransferSegmenter("test_resnet", num_classes=3, pretrained=False).backbone) is None


def test_img_size_on_a_backbone_that_takes_any_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`img_size` \(32\) .* 'test_resnet' has no such argument.*unset"):
        TransferClassifier("test_resnet", num_classes=3, pretrained=False, img_size=32)


def test_dynamic_img_size_keeps_the_pretrained_embeddings_and_takes_any_size(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model(STRICT_VIT, num_classes=10)  # "pretrained" at its own 160 px
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    weights = str(tmp_path / "vit.safetensors")
    model = TransferClassifier(STRICT_VIT, num_classes=3, pretrained=weights, dynamic_img_size=True)
    assert fixed_input_size(model.backbone) is None
    assert torch.equal(model.backbone.pos_embed, state["pos_embed"])  # kept as trained, resampled at each forward
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=_digits())  # 32 px data: the strict ViT refuses it (the first test)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    trainer.save_checkpoint(tmp_path / "vit.ckpt")
    again = TransferClassifier.load_from_checkpoint(tmp_path / "vit.ckpt", weights_only=True).eval()
    assert again.hparams["dynamic_img_size"] is True
    with torch.no_grad():
        for side in (32, 48, 160):
            assert again(torch.zeros(2, 3, side, side)).shape == (2, 3)


def test_dynamic_img_size_on_a_backbone_without_it_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`dynamic_img_size: true` .* 'test_resnet' has no such argument.*false"):
        TransferClassifier("test_resnet", num_classes=3, pretrained=False, dynamic_img_size=True)


@pytest.mark.slow  # three runs of the command, about 30 s
def test_the_command_names_the_fix_and_runs_with_it(tmp_path: Path):
    args = [
        *("fit", "--config", str(RECIPES / "defaults.yaml"), *TINY),
        *("--model.backbone", STRICT_VIT, "--data.image_size", "32", "--data.num_workers", "0"),
        f"--trainer.default_root_dir={tmp_path}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    refused = subprocess.run([str(LIT_TRANSFER), *args], capture_output=True, text=True, timeout=180, env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "takes only 160x160 px" in last and "--model.img_size 32" in last, last
    assert not (tmp_path / "lightning_logs").exists(), "a refused run claimed a run folder"
    for fix in (["--model.img_size", "32"], ["--model.dynamic_img_size", "true"]):
        built = subprocess.run([str(LIT_TRANSFER), *args, *fix], capture_output=True, text=True, timeout=180, env=env)
        assert built.returncode == 0, built.stderr[-3000:]


@pytest.mark.slow  # two 2-process runs of the command, about 45 s
@pytest.mark.ddp
def test_under_ddp_on_photos_it_is_refused_with_exit_2_before_any_rank_starts_then_trains_with_img_size(
    tmp_path: Path,
):
    make_photo_folder(tmp_path / "photos", bad_files=False)
    args = [
        *("fit", *photo_args(48, 4), *TINY, "--model.backbone", "test_maxvit"),  # TINY's length, random weights
        *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    refused = subprocess.run(
        [str(LIT_TRANSFER), *args], cwd=tmp_path, capture_output=True, text=True, timeout=150, env=env
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "built for 160x160 px" in last and "gives 48x48 px" in last and "--model.img_size 48" in last, last
    assert not (tmp_path / "runs").exists() and not list(tmp_path.rglob("*.ckpt"))
    assert "Initializing distributed" not in refused.stderr  # refused before the Trainer launched the ranks
    built = subprocess.run(
        [str(LIT_TRANSFER), *args, "--model.img_size", "48"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [last_ckpt] = tmp_path.rglob("last.ckpt")
    hparams = torch.load(last_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["img_size"] == 48 and hparams["backbone"] == "test_maxvit"


@pytest.mark.slow  # a 2-process fit and a predict of the command, about 40 s
@pytest.mark.ddp
def test_under_ddp_on_photos_dynamic_img_size_trains_at_one_size_and_predicts_at_another(tmp_path: Path):
    make_photo_folder(tmp_path / "photos", bad_files=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    fit = [
        *("fit", *photo_args(48, 4), *TINY, "--model.backbone", STRICT_VIT, "--model.dynamic_img_size", "true"),
        *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
    ]
    trained = subprocess.run(
        [str(LIT_TRANSFER), *fit], cwd=tmp_path, capture_output=True, text=True, timeout=150, env=env
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    [last_ckpt] = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(last_ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["dynamic_img_size"] is True
    assert checkpoint["hyper_parameters"].get("img_size") is None  # the 160 px embeddings kept, resampled per call
    predict = [
        *("predict", *photo_args(64, 4), "--model.backbone", STRICT_VIT, "--model.dynamic_img_size", "true"),
        *("--ckpt_path", str(last_ckpt)),
    ]
    predicted = subprocess.run(
        [str(LIT_TRANSFER), *predict], cwd=tmp_path, capture_output=True, text=True, timeout=150, env=env
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    said = " ".join(predicted.stderr.split())
    assert "(64x64 px," in said and "the checkpoint was trained with (48x48 px," in said  # really run at 64 px
    [predictions] = tmp_path.rglob("predictions.csv")
    assert len(predictions.read_text().strip().splitlines()) == 1 + 6  # the header, then the six unlabelled photos
