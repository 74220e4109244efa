"""TransferSegmenter: network, layer groups, policies, losses, metrics, checks; resume, bf16 on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_helpers import StopAfter
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from segmentation_fixture import CLASSES, make_segmentation_folder
from task_helpers import EpochLosses, TaskData, fit_trainer
from torchmetrics.classification import MulticlassJaccardIndex

from lit_transfer import AutoFreeze, FreezeUnfreeze, LinearProbe, SurgicalFineTune, TransferSegmenter, UnfreezeAtEpochs
from lit_transfer.data import SegmentationFolderDataModule
from lit_transfer.models.segmentation_losses import SegmentationLoss
from lit_transfer.models.segmentation_metrics import PixelConfusion, segmentation_scores


def _model(**kwargs) -> TransferSegmenter:
    kwargs.setdefault("num_classes", len(CLASSES))
    kwargs.setdefault("class_names", list(CLASSES))
    kwargs.setdefault("decoder_channels", 16)
    return TransferSegmenter(kwargs.pop("backbone", "test_resnet"), pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_segmentation_folder(tmp_path_factory.mktemp("seg"), train=8, val=4, test=4, predict=2)


def _data(root: Path, **kwargs) -> SegmentationFolderDataModule:
    kwargs.setdefault("train_transform", "light")
    return SegmentationFolderDataModule(root, image_size=32, batch_size=4, num_workers=0, **kwargs)


# ------------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize(
    ("backbone", "decoder", "groups"),
    [
        ("test_resnet", "unet", ["stem", "layer1", "layer2", "layer3", "layer4", "decoder", "head"]),
        ("test_resnet", "fpn", ["stem", "layer1", "layer2", "layer3", "layer4", "decoder", "head"]),
        ("test_convnext", "unet", ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "decoder", "head"]),
    ],
)
def test_scores_every_pixel_at_the_input_size_and_groups_encoder_decoder_head(backbone, decoder, groups):
    model = _model(backbone=backbone, decoder=decoder, decoder_channels=64)
    scores = model(torch.randn(2, 3, 64, 96))
    assert scores.shape == (2, 3, 64, 96)
    assert [g.name for g in model.layer_groups] == groups
    grouped = [id(p) for g in model.layer_groups for p in g.params]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # a partition: each parameter once
    decoder_group = {id(p) for p in model.layer_groups[-2].params}
    assert decoder_group == {id(p) for p in model.backbone.decoder.parameters()}
    scores.sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # no unused parameter (DDP, freezing)


def test_a_plain_vit_is_refused_with_the_backbones_that_fit():
    with pytest.raises(ValueError, match=r"reductions \[16, 16, 16, 16, 16, 16\].*hierarchical backbone"):
        _model(backbone="test_vit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decoder": "deeplab"}, r"`decoder` must be one of 'unet', 'fpn', got 'deeplab'"),
        ({"decoder": "fpn", "decoder_channels": 96}, r"FPN decoder must be a multiple of 64"),
        ({"loss": "ce+iou"}, r"`loss` must be one of 'ce', 'dice', 'focal' or a sum"),
        ({"ignore_index": 1}, r"`ignore_index` 1 is a class index \(0\.\.2\)"),
        ({"class_weights": [1.0, 2.0]}, r"`class_weights` must hold 3 non-negative numbers"),
        ({"cache_features": True}, r"`cache_features=True`.*nothing to cache"),
        ({"num_classes": 1, "class_names": None}, r"`num_classes` must be an integer >= 2"),
    ],
)
def test_bad_segmenter_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


# ------------------------------------------------------------------------------------------------ policies
@pytest.mark.parametrize(
    ("freeze", "schedule"),
    [
        ("freeze_unfreeze", {0: 2, 1: -1}),
        (FreezeUnfreeze(unfreeze_at_epoch=3), {0: 2, 3: -1}),
        ("linear_probe", {0: 2}),
        (LinearProbe(train_bn=True), {0: 2}),
        ({"policy": "gradual_unfreeze", "every_n_epochs": 2}, {0: 2, 2: 3, 4: 4, 6: 5, 8: 6, 10: 7}),
    ],
)
def test_head_only_policies_train_the_decoder_with_the_head(freeze, schedule):
    model = _model(freeze=freeze)
    assert isinstance(model.policy, UnfreezeAtEpochs) and model.policy.schedule == schedule
    assert model.hparams["freeze"]["schedule"] == schedule  # what checkpoints record
    assert model.policy.trainable_mask(0, 7) == [False] * 5 + [True, True]


def test_explicit_policies_are_kept():
    surgical = SurgicalFineTune(groups=["decoder"])
    assert _model(freeze=surgical).policy is surgical
    assert _model(freeze="full_fine_tune").policy.trainable_mask(0, 7) == [True] * 7


def test_auto_trains_the_decoder_with_the_head_in_its_probe_and_every_candidate(photos, tmp_path):
    policy = AutoFreeze(min_val_samples=2, trial_steps=2, max_trial_share=None)  # trials in 1 step
    model = _model(freeze=policy)
    assert model.policy is policy and policy.new_groups == 2  # the caller's object gets the plan
    assert model.hparams["freeze"]["new_groups"] == 2  # what checkpoints record
    assert [c.name for c in policy.candidates([g.name for g in model.layer_groups])] == [
        "decoder + head",
        "layer4 + decoder + head",
        "all groups",
    ]
    probe = TrainableAtEpochs()
    fit_trainer(tmp_path, 2, [probe], limit_train_batches=1, limit_val_batches=1).fit(model, datamodule=_data(photos))
    assert probe.trainable[0] == {"decoder", "head"}
    assert policy.plan is not None and len(policy.plan.trials) == 3  # the trials ran
    assert {"decoder", "head"} <= probe.trainable[1]
    assert policy.plan.mask[-2:] == (True, True) and policy.plan.lr_mults[-2:] == (1.0, 1.0)


class TrainableAtEpochs(Callback):
    def __init__(self) -> None:
        self.trainable: list[set[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            groups = pl_module.layer_groups
            self.trainable.append({g.name for g in groups if all(p.requires_grad for p in g.params)})


def test_the_encoder_trains_only_after_the_decoder_phase(photos, tmp_path):
    probe = TrainableAtEpochs()
    model = _model(freeze="freeze_unfreeze")
    fit_trainer(tmp_path, 2, [probe], limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=_data(photos))
    assert probe.trainable[0] == {"decoder", "head"}
    assert probe.trainable[1] == {g.name for g in model.layer_groups}


# ------------------------------------------------------------------------------------------------ losses, metrics
def test_cross_entropy_is_torchs_over_the_pixels_not_ignored():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    targets[0, :2] = 255
    weights = [1.0, 2.0, 0.5]
    ours = SegmentationLoss("ce", 255, weights)(logits, targets)
    theirs = torch.nn.functional.cross_entropy(logits, targets, weight=torch.tensor(weights), ignore_index=255)
    assert torch.allclose(ours, theirs)
    assert SegmentationLoss("ce")(logits, torch.full_like(targets, 255)).item() == 0.0  # all ignored: 0, not NaN


def test_a_sum_of_losses_is_the_sum_of_its_terms():
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    terms = [SegmentationLoss(name)(logits, targets) for name in ("ce", "dice", "focal")]
    assert torch.allclose(SegmentationLoss("ce+dice+focal")(logits, targets), sum(terms))
    assert all(t > 0 for t in terms)


def test_per_class_iou_matches_torchmetrics_and_miou_skips_absent_classes():
    torch.manual_seed(2)
    logits, targets = torch.randn(4, 4, 8, 8), torch.randint(0, 3, (4, 8, 8))  # class 3 never true
    logits[:, 3] = -10  # ... and never predicted
    targets[:, 0] = 255
    confusion = PixelConfusion(4, ignore_index=255)
    confusion.update(logits, targets)
    scores = segmentation_scores(confusion.compute(), ["a", "b", "c", "d"])
    reference = MulticlassJaccardIndex(4, average=None, ignore_index=255)(logits, targets)
    assert [scores[f"iou_{n}"] for n in "abc"] == pytest.approx(reference[:3].tolist())
    assert scores["iou_d"] != scores["iou_d"]  # NaN: neither present nor predicted
    assert scores["miou"] == pytest.approx(reference[:3].mean().item())
    valid = targets != 255
    assert scores["pixel_acc"] == pytest.approx((logits.argmax(1) == targets)[valid].float().mean().item())


# ------------------------------------------------------------------------------------------------ checks
def test_masks_that_are_not_class_indices_are_refused():
    model = _model()
    with pytest.raises(ValueError, match=r"masks of class indices of shape \(N, H, W\).*got float32 of shape"):
        model.targets_for_loss(torch.zeros(2, 4, 4), 0)
    with pytest.raises(ValueError, match=r"Mask values \[3, 7\] are neither class indices 0\.\.2 nor `ignore_index`"):
        model.targets_for_loss(torch.tensor([[[0, 3], [7, 255]]]), 0)


def test_data_of_another_task_ignore_index_or_size_is_refused(photos):
    with pytest.raises(ValueError, match=r"one label per image \(multiclass\), but `TransferSegmenter` labels every"):
        _model().check_data(TaskData("binary"), "fit")
    with pytest.raises(ValueError, match=r"marks ignored pixels with 0 but the model ignores 255"):
        _model().check_data(_data(photos, ignore_index=0), "fit")
    data = SegmentationFolderDataModule(photos, image_size=48, num_workers=0)
    with pytest.raises(ValueError, match=r"multiples of 32, but the DataModule gives 48x48 px.*e\.g\. 64"):
        _model(decoder="fpn", decoder_channels=64).check_data(data, "fit")


# ------------------------------------------------------------------------------------------------ training
def test_learns_the_shapes_of_photo_like_files(photos, tmp_path):
    torch.manual_seed(0)
    model = _model(freeze="full_fine_tune", loss="ce+dice", decoder_channels=32)
    trainer = fit_trainer(tmp_path, 8, limit_val_batches=0)
    trainer.fit(model, datamodule=_data(photos, train_transform="none"))
    before = trainer.callback_metrics["train_miou"].item()
    results = trainer.test(model, datamodule=_data(photos), verbose=False)[0]
    assert {"test_miou", "test_dice", "test_pixel_acc", "test_iou_disc"} <= set(results)
    assert results["test_pixel_acc"] > 0.5 and before > 0.2


def _resume_run(root: Path, out: Path, epochs: int, ckpt_path: Path | None = None, stop: bool = False):
    torch.manual_seed(0)
    model = _model(freeze=FreezeUnfreeze(unfreeze_at_epoch=1), layer_decay=0.8, loss="ce+focal")
    callbacks = [ModelCheckpoint(dirpath=out, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
    callbacks += [StopAfter(2)] if stop else []
    trainer = fit_trainer(out, 3, callbacks, enable_checkpointing=True, limit_val_batches=1)
    trainer.fit(model, datamodule=_data(root), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return model


def test_resume_across_the_unfreeze_is_exact(photos, tmp_path):
    full = _resume_run(photos, tmp_path / "a", 3)
    _resume_run(photos, tmp_path / "b", 3, stop=True)
    resumed = _resume_run(photos, tmp_path / "c", 3, ckpt_path=tmp_path / "b" / "epoch=1.ckpt")
    moved = False
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    start = torch.load(tmp_path / "b" / "epoch=1.ckpt", weights_only=True)["state_dict"]
    for name, value in full.state_dict().items():
        moved = moved or (name.startswith("backbone.encoder.layer1") and not torch.equal(start[name], value))
    assert moved  # the encoder trained in the resumed epoch: the comparison covers an unfrozen phase


def test_trains_in_bf16_mixed(photos, tmp_path):
    torch.manual_seed(0)
    model, losses = _model(), EpochLosses()
    with torch.backends.mkldnn.flags(enabled=False):  # see test_multilabel_model.py's bf16 test
        fit_trainer(tmp_path, 2, [losses], precision="bf16-mixed", limit_val_batches=0).fit(model, _data(photos))
    assert all(torch.isfinite(torch.tensor(losses.losses)))
    out = model.predict_step(torch.randn(2, 3, 32, 32), 0)
    assert out["probs"].dtype == torch.float32 and out["preds"].shape == (2, 32, 32)
