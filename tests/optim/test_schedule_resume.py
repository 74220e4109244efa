"""The default warmup-cosine schedule across resumes: a longer run is re-planned, never trained at LR 0."""

from __future__ import annotations

import warnings

import pytest
import torch
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_transfer import TransferClassifier
from lit_transfer.optim import WarmupCosine, WarmupCosineLR

STEPS_PER_EPOCH = 2  # 16 samples, batch 8


class StepLRs(Callback):
    """The LR of every param group used by each optimizer step, by global step."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for g in optimizer.param_groups]


def _model() -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, freeze="full_fine_tune")


def _fit(tmp_path, max_epochs: int, ckpt_path=None, callbacks=()) -> tuple[TransferClassifier, StepLRs]:
    model, lrs = _model(), StepLRs()
    trainer(tmp_path, max_epochs, [lrs, *callbacks]).fit(model, loader(fixed_data(n=16)), ckpt_path=ckpt_path)
    return model, lrs


def test_resume_with_more_epochs_follows_the_new_plan(tmp_path) -> None:
    first, _ = _fit(tmp_path / "a", 2)
    checkpoint = tmp_path / "epoch2.ckpt"
    first.trainer.save_checkpoint(checkpoint)
    assert first.trainer.optimizers[0].param_groups[0]["lr"] == 0.0  # the 2-epoch plan has ended

    with pytest.warns(UserWarning, match=r"planned for 4 optimizer steps.*this run for 8.*at step 4 is 0\.75"):
        resumed, resumed_lrs = _fit(tmp_path / "b", 4, ckpt_path=checkpoint)
    _, straight_lrs = _fit(tmp_path / "c", 4)

    extra = range(2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH)
    assert sorted(resumed_lrs.lrs) == list(extra) and resumed.trainer.global_step == 8
    assert all(lr > 0 for step in extra for lr in resumed_lrs.lrs[step])
    # the documented formula: base LR x WarmupCosine(new total, new warmup)(step), i.e. the uninterrupted 4-epoch run
    plan = WarmupCosine(8, warmup_steps=STEPS_PER_EPOCH)
    base = [g["initial_lr"] for g in resumed.trainer.optimizers[0].param_groups]
    for step in extra:
        assert resumed_lrs.lrs[step] == pytest.approx([b * plan(step) for b in base], rel=1e-12), step
        assert resumed_lrs.lrs[step] == pytest.approx(straight_lrs.lrs[step], rel=1e-12), step


def test_resume_with_the_same_length_is_bit_exact(tmp_path) -> None:
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    straight, straight_lrs = _fit(tmp_path / "a", 4, callbacks=[every_epoch])
    checkpoint = next((tmp_path / "ckpt").glob("epoch=1-*.ckpt"))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "The checkpoint's LR schedule")
        resumed, resumed_lrs = _fit(tmp_path / "b", 4, ckpt_path=checkpoint)
    assert resumed.trainer.global_step == 8
    for step, lrs in resumed_lrs.lrs.items():
        assert lrs == straight_lrs.lrs[step], step
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_plain_lambda_lr_state_loads_into_the_default_schedule() -> None:
    """Checkpoints written with ``LambdaLR(WarmupCosine)`` (before the class existed) resume, re-planned if longer."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    old = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(4))
    for _ in range(4):
        opt.step()
        old.step()
    state = old.state_dict()
    same = WarmupCosineLR(opt, total_steps=4)
    same.load_state_dict(state)
    assert same.last_epoch == 4 and same.get_last_lr() == [0.0]  # same plan: the checkpoint's state as it was
    longer = WarmupCosineLR(opt, total_steps=8)
    with pytest.warns(UserWarning, match="re-planned|follows this run's plan"):
        longer.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5) and longer.get_last_lr() == pytest.approx([0.5])
    opt.step()
    longer.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(WarmupCosine(8)(5))
