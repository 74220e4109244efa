"""Multi-label and binary TransferClassifier: training, tuned thresholds, mixup, pos_weight, resume, cache, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from callback_helpers import StopAfter
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from sklearn.metrics import f1_score
from task_helpers import LABELS, EpochLosses, TaskData, fit_trainer
from timm.data import Mixup

from lit_transfer import FreezeUnfreeze, TransferClassifier
from lit_transfer.models.mixing import DenseMixup


def _model(task: str = "multilabel", **kwargs) -> TransferClassifier:
    num_classes = len(LABELS) if task == "multilabel" else 2
    names = list(LABELS) if task == "multilabel" else ["odd", "even"]
    kwargs.setdefault("freeze", "full_fine_tune")
    return TransferClassifier(
        "test_resnet", num_classes=num_classes, class_names=names, pretrained=False, task=task, **kwargs
    )


def _f1_best_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the middle of the thresholds 0.00..1.00 with the best F1 (scikit-learn's F1)."""
    candidates = [i / 100 for i in range(101)]
    best = []
    for label in range(targets.shape[1]):
        scores = [
            f1_score(targets[:, label].numpy(), (probs[:, label] >= t).numpy(), zero_division=0) for t in candidates
        ]
        top = [t for t, s in zip(candidates, scores) if s >= max(scores) - 1e-6]
        best.append(top[len(top) // 2] if max(scores) > 0 else 0.5)
    return best


def test_multilabel_trains_tunes_thresholds_on_validation_and_restores_them(tmp_path):
    torch.manual_seed(0)
    data, model, losses = TaskData("multilabel"), _model(), EpochLosses()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit_trainer(tmp_path, 4, [losses, checkpoint], enable_checkpointing=True).fit(model, datamodule=data)
    assert losses.losses[-1] < losses.losses[0]
    # the thresholds are the F1-best ones on the last validation's predictions, made with the final weights
    model.eval()
    with torch.no_grad():
        probs = model(data.val_set.tensors[0]).sigmoid()
    assert model.thresholds == pytest.approx(_f1_best_thresholds(probs, data.val_set.tensors[1]), abs=1e-6)
    loaded = TransferClassifier.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.thresholds == model.thresholds and loaded.hparams.task == "multilabel"
    out = loaded.predict_step((data.val_set.tensors[0], None), 0)
    assert out["probs"].shape == (32, 3) and out["preds"].shape == (32, 3) and out["preds"].dtype == torch.long
    assert torch.equal(out["preds"], (out["probs"] >= torch.tensor(loaded.thresholds)).long())


def test_multilabel_logs_map_f1_and_each_labels_average_precision(tmp_path):
    torch.manual_seed(0)
    trainer = fit_trainer(tmp_path, 1)
    trainer.fit(_model(tune_threshold="global"), datamodule=TaskData("multilabel"))
    logged = set(trainer.callback_metrics)
    assert {"val_map", "val_f1", "train_f1", "val_loss"} <= logged
    assert {f"val_ap_{label}" for label in LABELS} <= logged
    metrics = trainer.validate(trainer.lightning_module, datamodule=TaskData("multilabel"), verbose=False)[0]
    per_label = [metrics[f"val_ap_{label}"] for label in LABELS]
    assert metrics["val_map"] == pytest.approx(sum(per_label) / len(per_label), abs=1e-6)


def test_global_tuning_gives_one_threshold_for_every_label(tmp_path):
    torch.manual_seed(0)
    model = _model(tune_threshold="global")
    fit_trainer(tmp_path, 2).fit(model, datamodule=TaskData("multilabel"))
    assert len(set(model.thresholds)) == 1 and len(model.thresholds) == 3


def test_binary_has_one_logit_trains_and_predicts_the_positive_class(tmp_path):
    torch.manual_seed(0)
    data, model, losses = TaskData("binary"), _model("binary"), EpochLosses()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 1)
    trainer = fit_trainer(tmp_path, 4, [losses])
    trainer.fit(model, datamodule=data)
    assert losses.losses[-1] < losses.losses[0]
    assert {"val_acc", "val_f1", "val_auroc", "train_acc"} <= set(trainer.callback_metrics)
    assert len(model.thresholds) == 1
    out = model.predict_step(data.val_set.tensors[0], 0)
    assert out["probs"].shape == (32,) and out["preds"].shape == (32,) and out["preds"].dtype == torch.long
    assert torch.equal(out["preds"], (out["probs"] >= model.thresholds[0]).long())


@pytest.mark.parametrize("alphas", [(1.0, 0.0), (0.0, 1.0)], ids=["mixup", "cutmix"])
def test_dense_mixup_mixes_images_as_timm_and_targets_with_the_same_lam(alphas):
    images, targets = torch.rand(6, 3, 16, 16), (torch.rand(6, 4) > 0.5).float()
    np.random.seed(3)  # timm draws lam and the CutMix box from NumPy's generator
    mixed_images, mixed = DenseMixup(*alphas)(images.clone(), targets)
    np.random.seed(3)
    timm_images, soft = Mixup(*alphas, label_smoothing=0.0, num_classes=2)(images.clone(), torch.arange(6) % 2)
    assert torch.equal(mixed_images, timm_images)
    lam = float(soft[0, 0])  # row 0 (class 0) is paired with row 5 (class 1): its class-0 weight is lam
    assert 0.0 < lam < 1.0
    assert torch.allclose(mixed, lam * targets + (1 - lam) * targets.flip(0))


def test_multilabel_trains_with_mixup_and_cutmix(tmp_path):
    torch.manual_seed(0)
    model, losses = _model(mixup_alpha=0.4, cutmix_alpha=1.0, label_smoothing=0.1), EpochLosses()
    fit_trainer(tmp_path, 2, [losses]).fit(model, datamodule=TaskData("multilabel"))
    assert all(torch.isfinite(torch.tensor(losses.losses)))


def test_pos_weight_auto_from_the_datamodule_or_counted_from_the_loader(tmp_path):
    data = TaskData("multilabel")
    frequencies = data.train_set.tensors[1].mean(dim=0)
    expected = (1 - frequencies) / frequencies
    given = _model(pos_weight="auto")
    fit_trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=0).fit(given, datamodule=data)
    del data.label_frequencies  # a DataModule without the attribute: the training loader is counted
    counted = _model(pos_weight="auto")
    fit_trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=0).fit(counted, datamodule=data)
    assert torch.allclose(given.pos_weight, expected) and torch.allclose(counted.pos_weight, expected)
    assert "pos_weight" not in counted.state_dict()  # recomputed by each fit, not a weight
    explicit = _model(pos_weight=[1.0, 2.0, 3.0])
    assert explicit.pos_weight.tolist() == [1.0, 2.0, 3.0]


def _resume_run(tmp_path: Path, epochs: int, ckpt_path: Path | None = None, stop: bool = False):
    torch.manual_seed(0)
    model = _model(freeze=FreezeUnfreeze(unfreeze_at_epoch=1), mixup_alpha=0.4, drop_rate=0.2, pos_weight="auto")
    callbacks = [ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
    callbacks += [StopAfter(2)] if stop else []  # the same max_epochs, so the same LR schedule
    trainer = fit_trainer(tmp_path, epochs, callbacks, enable_checkpointing=True)
    trainer.fit(model, datamodule=TaskData("multilabel"), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return model


def test_multilabel_resume_across_the_unfreeze_is_exact(tmp_path):
    full = _resume_run(tmp_path / "a", 3)
    _resume_run(tmp_path / "b", 3, stop=True)
    resumed = _resume_run(tmp_path / "c", 3, ckpt_path=tmp_path / "b" / "epoch=1.ckpt")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.thresholds == full.thresholds


@pytest.mark.parametrize("task", ["multilabel", "binary"])
def test_cached_features_train_the_sigmoid_head_like_images(tmp_path, task):
    weights = []
    for cache in (False, True):
        torch.manual_seed(0)
        model = _model(task, freeze="linear_probe", cache_features=cache)
        fit_trainer(tmp_path, 2).fit(model, datamodule=TaskData(task))
        weights.append((model.backbone.get_classifier().weight.detach().clone(), model.thresholds))
    assert torch.allclose(weights[0][0], weights[1][0], atol=1e-6)
    assert weights[0][1] == weights[1][1]


def test_multilabel_trains_in_bf16_mixed(tmp_path):
    torch.manual_seed(0)
    model, losses = _model(), EpochLosses()
    # oneDNN's bf16 convolution weight-gradient kernel on CPU can return NaN after other fits in the same process
    # (see tests/models/test_precision.py): the model's bf16 path is checked on torch's reference kernels
    with torch.backends.mkldnn.flags(enabled=False):
        fit_trainer(tmp_path, 2, [losses], precision="bf16-mixed").fit(model, datamodule=TaskData("multilabel"))
    assert all(torch.isfinite(torch.tensor(losses.losses)))
    assert all(0.0 <= t <= 1.0 for t in model.thresholds)


def test_multiclass_targets_fed_to_a_multilabel_model_name_the_datamodule_option(tmp_path):
    data = TaskData("binary")  # int class indices, and no `task` to check in setup
    del data.task
    model = TransferClassifier("test_resnet", num_classes=2, pretrained=False, task="multilabel")
    with pytest.raises(ValueError, match=r"multi-hot targets of shape \(N, 2\).*int64 of shape \(16,\).*label_columns"):
        fit_trainer(tmp_path, 1).fit(model, datamodule=data)


def test_a_datamodule_of_another_task_is_refused_in_setup(tmp_path):
    with pytest.raises(ValueError, match=r"gives each image one class, but the model's `task` is 'multilabel'"):
        fit_trainer(tmp_path, 1).fit(_model(), datamodule=TaskData("binary"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "binary", "num_classes": 3}, r"`task='binary'` needs `num_classes=2`"),
        ({"task": "multi"}, r"`task` must be one of 'multiclass', 'multilabel', 'binary', got 'multi'"),
        ({"task": "multilabel", "threshold": 1.0}, r"`threshold` must be a probability in \(0, 1\)"),
        ({"task": "multilabel", "tune_threshold": "best"}, r"`tune_threshold` must be one of"),
        ({"task": "multilabel", "pos_weight": [1.0]}, r"`pos_weight` must hold 3 positive numbers"),
        ({"pos_weight": "auto"}, r"`pos_weight` .* needs `task='multilabel'` or `task='binary'`"),
    ],
)
def test_bad_task_arguments_are_refused(kwargs, match):
    kwargs.setdefault("num_classes", 3)
    with pytest.raises(ValueError, match=match):
        TransferClassifier("test_resnet", pretrained=False, **kwargs)


def test_binary_targets_other_than_0_and_1_are_refused(tmp_path):
    data = TaskData("binary")
    data.train_set.tensors[1][0] = 2
    model = _model("binary")
    with pytest.raises(ValueError, match=r"takes targets 0 or 1, got \[0.0, 1.0, 2.0\]"):
        fit_trainer(tmp_path, 1).fit(model, datamodule=data)


class GatherState(Callback):
    """At the end of training, the largest difference between the two ranks' weights and thresholds, per name."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        state = {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        if getattr(pl_module, "thresholds", None):  # the sigmoid tasks' thresholds, kept beside the weights
            state["thresholds"] = torch.tensor(pl_module.thresholds)
        diffs = {}
        for name, value in state.items():
            gathered = trainer.strategy.all_gather(value.detach())
            diffs[name] = float((gathered[0] - gathered[1]).abs().max()) if value.numel() else 0.0
        if trainer.is_global_zero:
            Path(self.out).write_text(json.dumps({"max": max(diffs.values()), "per_param": diffs}))


def _ema(average: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """An exponential moving average with decay 0.8 (torch's ``get_ema_avg_fn(0.8)``, picklable)."""
    return 0.8 * average + 0.2 * current


def _ddp(tmp_path: Path, task: str, averaging: bool = False) -> dict:
    torch.manual_seed(0)
    out = tmp_path / "diff.json"
    if task == "regression":
        from lit_transfer import TransferRegressor

        data = TaskData("regression")
        model = TransferRegressor(
            "test_resnet",
            num_outputs=2,
            pretrained=False,
            target_stats=data.target_stats,
            freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
            mixup_alpha=0.4,
        )
    else:
        data = TaskData(task)
        model = _model(task, freeze=FreezeUnfreeze(unfreeze_at_epoch=1), mixup_alpha=0.4, pos_weight="auto")
    # Lightning's EMAWeightAveraging holds a closure, which ddp_spawn cannot pickle: the same average from here
    averages = [WeightAveraging(avg_fn=_ema)] if averaging else []  # copies the average in before the gather
    trainer = fit_trainer(tmp_path, 2, [*averages, GatherState(str(out))], devices=2, strategy="ddp_spawn")
    trainer.fit(model, datamodule=data)
    return json.loads(out.read_text())


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("task", ["multilabel", "binary", "regression", "multilabel+averaging"])
def test_ddp_replicas_stay_identical(tmp_path, task):
    result = _ddp(tmp_path, task.split("+")[0], averaging=task.endswith("+averaging"))
    assert ("thresholds" in result["per_param"]) == task.startswith(("multilabel", "binary"))
    assert result["max"] == 0.0, {k: v for k, v in result["per_param"].items() if v}


def test_a_checkpoint_without_the_task_arguments_loads_as_the_multiclass_classifier(tmp_path):
    """Checkpoints written before `task` existed hold none of its arguments: they load as multiclass models."""
    torch.manual_seed(0)
    model = TransferClassifier("test_resnet", num_classes=2, pretrained=False, freeze="linear_probe")
    trainer = fit_trainer(tmp_path, 1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, datamodule=TaskData("binary"))
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", weights_only=True)
    for key in ("task", "threshold", "tune_threshold", "pos_weight"):
        del checkpoint["hyper_parameters"][key]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = TransferClassifier.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.task == "multiclass" and loaded.thresholds == []
    images = TaskData("binary").val_set.tensors[0][:4]
    assert torch.equal(loaded.eval()(images), model.eval()(images))
