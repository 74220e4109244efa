"""Lightning's weight averaging (``EMAWeightAveraging``) with the package's models, phases and checkpoints.

Validation runs with the averaged weights, the checkpoint's ``state_dict`` holds them: the decision thresholds of a
sigmoid model must be the ones tuned on those weights, a ``pos_weight`` set at the start of ``fit`` must not upset
the averaging, a resume across the unfreeze must end where an uninterrupted run ends, the steps of the LR range test
and of ``auto``'s trials must stay out of the average, and the averaged copy must not copy the optimizer factory.
"""

from __future__ import annotations

import copy
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from callback_helpers import StopAfter
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging
from task_helpers import LABELS, TaskData, fit_trainer
from test_multilabel_model import _f1_best_thresholds
from torch.optim.swa_utils import get_ema_avg_fn

from lit_transfer import AutoFreeze, ExceptionCheckpoint, FreezeUnfreeze, GroupLRFinder, TransferClassifier
from lit_transfer._compat import set_received_sigterm
from lit_transfer.callbacks import LayerFreezing
from lit_transfer.trainer_facts import find_callback


def _model(task: str, **kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    num_classes = len(LABELS) if task == "multilabel" else 2
    kwargs.setdefault("freeze", FreezeUnfreeze(unfreeze_at_epoch=1))
    return TransferClassifier("test_resnet", num_classes=num_classes, pretrained=False, task=task, **kwargs)


def _data(task: str) -> TaskData:
    return TaskData("multilabel" if task == "multilabel" else "binary")  # binary's data: two classes, multiclass


def _val_probs(model: TransferClassifier, data: TaskData) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(data.val_set.tensors[0]).sigmoid()


def test_thresholds_are_tuned_on_the_averaged_weights_and_saved_with_them(tmp_path: Path) -> None:
    data, model = TaskData("multilabel"), _model("multilabel", pos_weight="auto")
    every_epoch = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = fit_trainer(tmp_path, 3, [EMAWeightAveraging(decay=0.9), every_epoch], enable_checkpointing=True)
    trainer.fit(model, datamodule=data)

    # the final weights are the average, and the thresholds the F1-best ones on its validation predictions
    targets = data.val_set.tensors[1]
    assert model.thresholds == pytest.approx(_f1_best_thresholds(_val_probs(model, data), targets), abs=1e-6)
    assert model.thresholds != [0.5] * len(LABELS)  # tuned, not the starting threshold
    for path in sorted(tmp_path.glob("epoch=*.ckpt")):
        checkpoint = torch.load(path, weights_only=True)
        averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
        assert any(not torch.equal(averaged[k], current[k]) for k in averaged), path.name  # averaging was on
        loaded = TransferClassifier.load_from_checkpoint(path)
        assert loaded.thresholds == pytest.approx(checkpoint["decision_thresholds"], abs=1e-6), path.name
        expected = _f1_best_thresholds(_val_probs(loaded, data), targets)
        assert loaded.thresholds == pytest.approx(expected, abs=1e-6), path.name  # tuned with these weights
    assert "pos_weight" not in model.state_dict() and model.pos_weight is not None


def _run(tmp_path: Path, task: str, ckpt_path: Path | None = None, stop: bool = False) -> TransferClassifier:
    model = _model(task, probe_views=2)
    callbacks = [
        EMAWeightAveraging(decay=0.8),
        ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}"),
        *([StopAfter(1)] if stop else []),  # the same max_epochs, so the same LR schedule
    ]
    trainer = fit_trainer(tmp_path, 3, callbacks, enable_checkpointing=True)
    trainer.fit(model, datamodule=_data(task), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
    return model


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_resume_across_the_unfreeze_ends_with_the_uninterrupted_average(tmp_path: Path, task: str) -> None:
    full = _run(tmp_path / "a", task)
    _run(tmp_path / "b", task, stop=True)
    resumed = _run(tmp_path / "c", task, ckpt_path=tmp_path / "b" / "epoch=0.ckpt")  # resumes into the unfreeze
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.thresholds == full.thresholds
    final = torch.load(tmp_path / "c" / "epoch=2.ckpt", weights_only=True)
    straight = torch.load(tmp_path / "a" / "epoch=2.ckpt", weights_only=True)
    for key in ("state_dict", "current_model_state", "averaging_state"):  # the average and the training weights
        for name, value in straight[key].items():
            assert torch.equal(final[key][name], value), (key, name)


class SigtermInValidation(Callback):
    """Tell Lightning a SIGTERM arrived during the first validation batch of ``epoch``, as its signal handler does:
    the validation loop stops before its next batch, with the averaged weights swapped into the model."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            self.training_weights = copy.deepcopy(_average_of(trainer).module.state_dict())  # swapped out for now
            set_received_sigterm(trainer)


def _average_of(trainer) -> Any:
    return find_callback(trainer, EMAWeightAveraging)._average_model


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_stop_during_validation_keeps_the_training_weights_and_the_average_apart(tmp_path: Path, task: str) -> None:
    """``EMAWeightAveraging`` swaps the average into the model for validation: a stop there must not save (or
    leave) them swapped, and ``on_exception.ckpt`` resumes to the uninterrupted run's weights and average."""

    def run(root: Path, *extra: Callback, ckpt_path: Path | None = None, model: TransferClassifier | None = None):
        model = model or _model(task)
        callbacks = [EMAWeightAveraging(decay=0.8), *extra, ExceptionCheckpoint()]
        trainer = fit_trainer(root, 3, callbacks, enable_checkpointing=False)
        trainer.fit(model, datamodule=_data(task), ckpt_path=ckpt_path, weights_only=ckpt_path and True)
        return model, trainer

    full, full_trainer = run(tmp_path / "full")
    stop, stopped = SigtermInValidation(epoch=1), _model(task)  # epoch 1: the backbone unfreezes
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException
        run(tmp_path / "stopped", stop, model=stopped)
    saved = torch.load(tmp_path / "stopped" / "checkpoints" / "on_exception.ckpt", weights_only=True)
    assert saved["epoch"] == 1
    training, average = saved["current_model_state"], saved["state_dict"]
    for name, value in stop.training_weights.items():
        assert torch.equal(training[name], value), name  # the training weights as training weights
    assert any(not torch.equal(average[n], v) for n, v in stop.training_weights.items() if v.is_floating_point())
    for name, value in stopped.state_dict().items():
        assert torch.equal(value, training[name]), name  # the model left by the failed fit holds them too

    resumed, resumed_trainer = run(
        tmp_path / "resumed", ckpt_path=tmp_path / "stopped" / "checkpoints" / "on_exception.ckpt"
    )
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # the final model: the average
    averages = _average_of(full_trainer).state_dict(), _average_of(resumed_trainer).state_dict()
    for (name, a), b in zip(averages[0].items(), averages[1].values()):
        assert torch.equal(a, b), name  # the average's step count too
    assert resumed.thresholds == full.thresholds


def test_a_checkpoint_with_thresholds_in_its_state_dict_still_loads(tmp_path: Path) -> None:
    """Checkpoints written while the thresholds were a buffer hold them in ``state_dict``: they load and resume."""
    data, model = TaskData("multilabel"), _model("multilabel")
    trainer = fit_trainer(tmp_path, 1, enable_checkpointing=False)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", weights_only=True)
    checkpoint["state_dict"]["decision_thresholds"] = torch.tensor(checkpoint.pop("decision_thresholds"))
    torch.save(checkpoint, tmp_path / "old.ckpt")

    loaded = TransferClassifier.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.thresholds == model.thresholds != [0.5] * len(LABELS)
    resumed = _model("multilabel")
    fit_trainer(tmp_path / "resume", 2, enable_checkpointing=False).fit(
        resumed, datamodule=data, ckpt_path=tmp_path / "old.ckpt", weights_only=True
    )
    assert resumed.trainer.global_step == 2 * model.trainer.global_step


class StepWeights(Callback):
    """The module's parameters after each of the fit's optimizer steps."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append([p.detach().clone() for p in pl_module.parameters()])

    def average(self, decay: float) -> list[torch.Tensor]:
        """Torch's exponential average (``get_ema_avg_fn``) of the recorded steps, from the first step's weights."""
        ema = get_ema_avg_fn(decay)
        average = [p.clone() for p in self.steps[0]]
        for weights in self.steps[1:]:
            average = [ema(a, w, None) for a, w in zip(average, weights)]
        return average


@pytest.mark.parametrize("side_steps", ["lr range test", "auto trials"])
def test_steps_outside_the_fit_do_not_enter_the_average(tmp_path: Path, side_steps: str) -> None:
    """The final weights are the average of the weights after each of the fit's own steps, computed here with
    torch's own EMA function: neither the range test's steps nor the trial fine-tunes of `auto` are in it."""
    if side_steps == "auto trials":
        model, extra = _model("multiclass", freeze=AutoFreeze(max_trial_share=None)), []
    else:
        model, extra = _model("multiclass"), [GroupLRFinder(num_steps=6, apply=False, out_dir=tmp_path / "lr")]
    steps = StepWeights()
    trainer = fit_trainer(tmp_path, 3, [*extra, EMAWeightAveraging(decay=0.8), steps])
    trainer.fit(model, datamodule=_data("multiclass"))
    if side_steps == "auto trials":
        plan = next(c for c in trainer.callbacks if isinstance(c, LayerFreezing)).policy.state_dict()["plan"]
        assert plan["trials"], plan  # the trials ran
    else:
        assert extra[0].result is not None and len(extra[0].result.lrs) == 6  # the range test ran
    average = steps.average(0.8)
    for (name, final), expected in zip(model.named_parameters(), average):
        assert torch.equal(final, expected), name


class LockedFactory:
    """An optimizer factory holding a lock, as the command line's jsonargparse callables reach one under ``ddp``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, params) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.05)


def test_the_averaged_copy_shares_the_optimizer_factory_and_has_no_trainer(tmp_path: Path) -> None:
    model = _model("multiclass", optimizer=LockedFactory())
    fit_trainer(tmp_path, 2, [EMAWeightAveraging(decay=0.8)]).fit(model, datamodule=_data("multiclass"))
    copied = copy.deepcopy(model)
    assert copied._trainer is None and model._trainer is not None
    assert copied._optimizer_factory is model._optimizer_factory
    for (name, a), b in zip(model.state_dict().items(), copied.state_dict().values()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name


def _warnings_of_fit(
    tmp_path: Path, model: TransferClassifier, data: TaskData, averaging: Callback, epochs: int
) -> list[str]:
    """The messages of the warnings a fit of ``model`` with ``averaging`` gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_trainer(tmp_path, epochs, [averaging]).fit(model, datamodule=data)
    return [str(w.message) for w in caught]


def _fit_warnings(tmp_path: Path, averaging: EMAWeightAveraging, epochs: int) -> list[str]:
    model = _model("multiclass", freeze="full_fine_tune")  # 64 images in batches of 16: 4 steps an epoch
    messages = _warnings_of_fit(tmp_path, model, _data("multiclass"), averaging, epochs)
    return [m for m in messages if "EMAWeightAveraging" in m]


def test_an_average_spanning_more_steps_than_the_fit_makes_is_warned_about(tmp_path: Path) -> None:
    lightning_default = _fit_warnings(tmp_path / "a", EMAWeightAveraging(), 3)
    assert len(lightning_default) == 1
    assert "EMAWeightAveraging(decay=0.999) averages over about 1000 optimizer steps" in lightning_default[0]
    assert "updates the average 12 times" in lightning_default[0]
    assert not _fit_warnings(tmp_path / "b", EMAWeightAveraging(decay=0.9), 3)  # about 10 steps of 12
    late = EMAWeightAveraging(decay=0.9, update_starting_at_step=4)  # 8 updates: fewer than 10
    assert "updates the average 8 times" in _fit_warnings(tmp_path / "c", late, 3)[0]


def test_an_average_the_fit_never_updates_is_warned_about(tmp_path: Path) -> None:
    """The premise: such a fit ends with the weights it started from. The warning names the settings."""
    model = _model("multiclass", freeze="full_fine_tune")
    start = copy.deepcopy(model.state_dict())
    never = EMAWeightAveraging(decay=0.9, update_starting_at_step=100)  # the fit makes 12 steps
    messages = _warnings_of_fit(tmp_path / "a", model, _data("multiclass"), never, 3)
    messages = [m for m in messages if "never updates its average" in m]
    assert (
        len(messages) == 1 and "update_starting_at_step=100" in messages[0] and "of 12 optimizer steps" in messages[0]
    )
    for name, value in start.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert not _fit_warnings(tmp_path / "b", EMAWeightAveraging(decay=0.5, update_starting_at_step=8), 3)
    by_epoch = EMAWeightAveraging(decay=0.5, update_every_n_steps=0, update_starting_at_epoch=2)  # at epoch 2's end
    assert not _fit_warnings(tmp_path / "c", by_epoch, 3)
    assert "never updates" in _fit_warnings(tmp_path / "d", by_epoch, 2)[0]


def test_stochastic_weight_averaging_without_batchnorm_is_warned_about(tmp_path: Path) -> None:
    """The premise: a model without BatchNorm gets SWA's average after its last validation, so its thresholds were
    tuned on other weights. With BatchNorm, SWA's extra epoch validates the average: no warning."""
    data = _data("multilabel")
    for backbone, warned in [("test_vit", True), ("test_resnet", False)]:
        torch.manual_seed(0)
        extra = {"img_size": 16} if backbone == "test_vit" else {}
        model = TransferClassifier(
            backbone, num_classes=len(LABELS), pretrained=False, task="multilabel", freeze="full_fine_tune", **extra
        )
        swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=0.25)
        messages = _warnings_of_fit(tmp_path / backbone, model, data, swa, 4)
        messages = [m for m in messages if "StochasticWeightAveraging copies" in m]
        assert len(messages) == warned, backbone
        best = _f1_best_thresholds(_val_probs(model, data), data.val_set.tensors[1])
        assert (model.thresholds != pytest.approx(best, abs=1e-6)) == warned, backbone


@pytest.mark.parametrize("kind", ["regressor", "segmenter"])
def test_the_other_models_end_with_the_average_of_their_steps(tmp_path: Path, kind: str) -> None:
    from segmentation_fixture import make_segmentation_folder

    from lit_transfer import TransferRegressor, TransferSegmenter
    from lit_transfer.data import SegmentationFolderDataModule

    torch.manual_seed(0)
    if kind == "regressor":
        data: Any = TaskData("regression")
        model: Any = TransferRegressor("test_resnet", num_outputs=2, pretrained=False, target_stats=data.target_stats)
    else:
        root = make_segmentation_folder(tmp_path / "masks", train=8, val=2, test=0, predict=0)
        data = SegmentationFolderDataModule(root, image_size=32, num_workers=0, batch_size=4)
        model = TransferSegmenter("test_resnet", num_classes=3, pretrained=False)
    steps = StepWeights()
    fit_trainer(tmp_path, 2, [EMAWeightAveraging(decay=0.5), steps]).fit(model, datamodule=data)
    average = steps.average(0.5)
    assert len(steps.steps) > 2
    for (name, final), expected in zip(model.named_parameters(), average):
        assert torch.equal(final, expected), name
