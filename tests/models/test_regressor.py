"""TransferRegressor: training, metrics and predictions in original units, target_stats kept, resume, cache, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_helpers import StopAfter
from lightning.pytorch.callbacks import ModelCheckpoint
from task_helpers import TARGETS, EpochLosses, TaskData, fit_trainer

from lit_transfer import FreezeUnfreeze, TransferRegressor


def _model(data: TaskData, **kwargs) -> TransferRegressor:
    kwargs.setdefault("freeze", "full_fine_tune")
    return TransferRegressor(
        "test_resnet",
        num_outputs=2,
        pretrained=False,
        target_names=list(TARGETS),
        target_stats=data.target_stats,
        **kwargs,
    )


def _original(data: TaskData, standardised: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(data.target_stats[k]) for k in ("mean", "std"))
    return standardised * std + mean


def test_regressor_trains_and_reports_metrics_and_predictions_in_original_units(tmp_path):
    torch.manual_seed(0)
    data = TaskData("regression")
    model, losses = _model(data), EpochLosses()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = fit_trainer(tmp_path, 4, [losses, checkpoint], enable_checkpointing=True)
    trainer.fit(model, datamodule=data)
    assert losses.losses[-1] < losses.losses[0]
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    images, standardised = data.val_set.tensors
    model.eval()
    with torch.no_grad():
        raw = model(images)
    predicted, truth = _original(data, raw), _original(data, standardised)
    assert metrics["val_mae"] == pytest.approx(float((predicted - truth).abs().mean()), rel=1e-4)
    assert metrics["val_rmse"] == pytest.approx(float((predicted - truth).pow(2).mean().sqrt()), rel=1e-4)
    r2 = 1 - (predicted - truth).pow(2).sum(0) / (truth - truth.mean(0)).pow(2).sum(0)
    assert metrics["val_r2"] == pytest.approx(float(r2.mean()), rel=1e-4, abs=1e-5)
    loaded = TransferRegressor.load_from_checkpoint(tmp_path / "last.ckpt")
    assert loaded.target_stats == data.target_stats and loaded.target_names == TARGETS
    values = loaded.eval().predict_step((images, None), 0)["values"]
    assert values.shape == (32, 2)
    assert torch.allclose(values, predicted, atol=1e-5)
    outputs = fit_trainer(tmp_path, 1).predict(loaded, datamodule=data)
    assert torch.allclose(torch.cat([o["values"] for o in outputs]), predicted, atol=1e-5)


def test_without_target_stats_values_are_the_raw_outputs(tmp_path):
    data = TaskData("regression", standardize=False)
    model = _model(data).eval()
    images = data.val_set.tensors[0][:4]
    assert torch.equal(model.predict_step(images, 0)["values"], model(images))
    fit_trainer(tmp_path, 1, limit_train_batches=1).fit(model, datamodule=data)


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_each_loss_is_torchs_on_standardised_values(loss):
    model = _model(TaskData("regression"), loss=loss, huber_delta=0.5)
    outputs, targets = torch.randn(8, 2), torch.randn(8, 2)
    expected = {
        "mse": torch.nn.functional.mse_loss(outputs, targets),
        "l1": torch.nn.functional.l1_loss(outputs, targets),
        "huber": torch.nn.functional.huber_loss(outputs, targets, delta=0.5),
    }[loss]
    assert torch.equal(model.loss(outputs, targets, "train"), expected)


def _resume_run(tmp_path: Path, epochs: int, ckpt_path: Path | None = None, stop: bool = False) -> TransferRegressor:
    torch.manual_seed(0)
    data = TaskData("regression")
    model = _model(data, freeze=FreezeUnfreeze(unfreeze_at_epoch=1), mixup_alpha=0.4, drop_rate=0.2, loss="huber")
    callbacks = [ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")]
    callbacks += [StopAfter(2)] if stop else []  # the same max_epochs, so the same LR schedule
    trainer = fit_trainer(tmp_path, epochs, callbacks, enable_checkpointing=True)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return model


def test_regressor_resume_across_the_unfreeze_is_exact(tmp_path):
    full = _resume_run(tmp_path / "a", 3)
    _resume_run(tmp_path / "b", 3, stop=True)
    resumed = _resume_run(tmp_path / "c", 3, ckpt_path=tmp_path / "b" / "epoch=1.ckpt")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_cached_features_train_the_regression_head_like_images(tmp_path):
    weights = []
    for cache in (False, True):
        torch.manual_seed(0)
        data = TaskData("regression")
        model = _model(data, freeze="linear_probe", cache_features=cache)
        fit_trainer(tmp_path, 2).fit(model, datamodule=data)
        weights.append(model.backbone.get_classifier().weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


def test_regressor_trains_in_bf16_mixed(tmp_path):
    torch.manual_seed(0)
    data = TaskData("regression")
    model, losses = _model(data), EpochLosses()
    with torch.backends.mkldnn.flags(enabled=False):  # see test_multilabel_model.py's bf16 test
        fit_trainer(tmp_path, 2, [losses], precision="bf16-mixed").fit(model, datamodule=data)
    assert all(torch.isfinite(torch.tensor(losses.losses)))
    assert model.predict_step(data.val_set.tensors[0][:2], 0)["values"].dtype == torch.float32


def test_class_indices_fed_to_the_regressor_name_the_datamodule_option(tmp_path):
    data = TaskData("binary")
    del data.task
    model = TransferRegressor("test_resnet", num_outputs=1, pretrained=False)
    with pytest.raises(ValueError, match=r"float targets of shape \(N, 1\), got int64 .*target_columns"):
        fit_trainer(tmp_path, 1).fit(model, datamodule=data)


def test_a_datamodule_of_other_outputs_or_statistics_is_refused(tmp_path):
    data = TaskData("regression")
    with pytest.raises(ValueError, match=r"has 2 regression targets but the model was built with `num_outputs=1`"):
        fit_trainer(tmp_path, 1).fit(TransferRegressor("test_resnet", pretrained=False), datamodule=data)
    unstandardised = _model(TaskData("regression", standardize=False))
    with pytest.raises(ValueError, match=r"standardises its targets with `target_stats=.*but the model undoes"):
        fit_trainer(tmp_path, 1).fit(unstandardised, datamodule=data)
    with pytest.raises(
        ValueError, match=r"holds multilabel labels, but the model `TransferRegressor` regresses numbers"
    ):
        fit_trainer(tmp_path, 1).fit(_model(data), datamodule=TaskData("multilabel"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_outputs": 0}, r"`num_outputs` must be an integer >= 1, got 0"),
        ({"num_outputs": 2, "target_names": ["a"]}, r"`target_names` has 1 names but `num_outputs` is 2"),
        ({"target_stats": {"mean": [0.0], "std": [0.0]}}, r"`target_stats` must be .*every std positive"),
        ({"loss": "mae"}, r"`loss` must be one of 'mse', 'l1', 'huber', got 'mae'"),
        ({"huber_delta": 0}, r"`huber_delta` must be a positive number"),
        ({"layer_decay": 2.0}, r"`layer_decay` must be in \(0, 1\]"),
    ],
)
def test_bad_regressor_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransferRegressor("test_resnet", pretrained=False, **kwargs)
