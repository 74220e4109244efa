"""Layer decay survives a scheduler given one LR for all groups: ``keep_group_lr_ratios`` (and ``apply_lr_scales``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from callback_helpers import FixedDataModule, TinyRegressor, every_epoch_checkpoint, fit
from freeze_helpers import fixed_data, loader, trainer
from lightning.pytorch import Callback, Trainer
from torch.optim.lr_scheduler import LinearLR, OneCycleLR, SequentialLR, StepLR

from lit_transfer import TransferClassifier
from lit_transfer.optim.param_groups import keep_group_lr_ratios

MAX_LR = 1e-3


def _classifier(**kwargs) -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier("test_resnet", num_classes=3, pretrained=False, layer_decay=0.5, **kwargs)


def _configured(model: TransferClassifier) -> dict:
    """``model.configure_optimizers()`` as Lightning calls it: with a Trainer attached (a run of 10 steps, no data)."""
    model.trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, max_steps=10)
    return model.configure_optimizers()


def _one_cycle(total_steps: int = 20) -> partial:
    return partial(OneCycleLR, max_lr=MAX_LR, total_steps=total_steps)


def _lrs(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    return torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)


def _scales(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    return torch.tensor([g["lr_scale"] for g in optimizer.param_groups], dtype=torch.float64)


def test_a_scalar_max_lr_keeps_the_layer_decay_of_a_classifier_optimizer() -> None:
    """Every step of the cycle: group LR = head LR x lr_scale; the head follows OneCycleLR(max_lr) exactly."""
    config = _configured(_classifier(lr_scheduler=_one_cycle(), scheduler_interval="step"))
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    scales = _scales(optimizer)
    assert len(set(scales.tolist())) > 3  # layer decay: several distinct scales, the head's is 1
    # the classifier keeps the ratios itself (a bare OneCycleLR(max_lr=scalar) gave every group the same LR)
    torch.testing.assert_close(_lrs(optimizer), _lrs(optimizer)[-1] * scales / scales[-1], rtol=1e-12, atol=0)
    assert len(set(_lrs(optimizer).tolist())) > 3

    assert keep_group_lr_ratios(scheduler) is scheduler  # a second call changes nothing
    head = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # the same schedule on one group
    reference = OneCycleLR(head, max_lr=MAX_LR, total_steps=20)
    for _ in range(20):
        torch.testing.assert_close(_lrs(optimizer), head.param_groups[0]["lr"] * scales, rtol=1e-12, atol=0)
        optimizer.step(), scheduler.step(), head.step(), reference.step()
    assert [g["max_lr"] for g in optimizer.param_groups] == pytest.approx((MAX_LR * scales).tolist())


def test_nothing_changes_when_there_is_nothing_to_keep() -> None:
    """Per-group max_lr lists, uniform scales and other schedulers are left as built; a second call is a no-op."""
    model = _classifier(warmup_epochs=0)  # no data attached: no epoch to warm up over
    optimizer = _configured(model)["optimizer"]  # default schedule: built from each group's own LR
    per_group = OneCycleLR(optimizer, max_lr=[MAX_LR * s for s in _scales(optimizer).tolist()], total_steps=10)
    before = _lrs(optimizer)
    keep_group_lr_ratios(keep_group_lr_ratios(per_group))
    torch.testing.assert_close(_lrs(optimizer), before, rtol=0, atol=0)

    plain = torch.optim.SGD([{"params": [torch.zeros(1)]}, {"params": [torch.ones(1)]}], lr=0.1)
    keep_group_lr_ratios(OneCycleLR(plain, max_lr=MAX_LR, total_steps=10))
    assert [g["max_lr"] for g in plain.param_groups] == [MAX_LR, MAX_LR]
    step = StepLR(optimizer, 2)
    assert keep_group_lr_ratios(step) is step


def test_a_nested_scalar_one_cycle_is_refused_with_the_fix() -> None:
    optimizer = _configured(_classifier(warmup_epochs=0))["optimizer"]
    warm = LinearLR(optimizer, 0.5, total_iters=2)
    nested = SequentialLR(optimizer, [warm, OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=10)], milestones=[2])
    with pytest.raises(ValueError, match=r"OneCycleLR inside SequentialLR got one `max_lr` \(0\.001\).*as a list"):
        keep_group_lr_ratios(nested)


class _KeepRatios(TransferClassifier):
    """The classifier with the one-line fix in ``configure_optimizers``."""

    def configure_optimizers(self):
        config = super().configure_optimizers()
        keep_group_lr_ratios(config["lr_scheduler"]["scheduler"])
        return config


class _UsedLRs(Callback):
    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rows.append([g["lr"] for g in optimizer.param_groups])


def test_a_classifier_fit_trains_every_group_at_its_share(tmp_path: Path) -> None:
    used = _UsedLRs()
    model = _KeepRatios(
        "test_resnet",
        num_classes=3,
        pretrained=False,
        layer_decay=0.5,
        lr_scheduler=_one_cycle(8),
        scheduler_interval="step",
    )
    data = fixed_data(n=32)
    trainer(tmp_path, 2, [used]).fit(model, loader(data))
    rows = torch.tensor(used.rows, dtype=torch.float64)
    assert rows.shape[0] == 8
    scales = _scales(model.trainer.optimizers[0])
    head = rows[:, scales.argmax()]
    torch.testing.assert_close(rows, head[:, None] * scales[None, :], rtol=1e-12, atol=0)
    single = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = OneCycleLR(single, max_lr=MAX_LR, total_steps=8)
    expected = []
    for _ in range(8):
        expected.append(single.param_groups[0]["lr"])
        single.step(), reference.step()
    torch.testing.assert_close(head, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


class _ScalarOneCycle(TinyRegressor):
    """Two groups (``head`` at half the body's LR) with ``OneCycleLR(max_lr=scalar)`` and the fix."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.param_groups(), lr=self.lr, momentum=0.9)  # lr_scale 1 and 0.5
        scheduler = keep_group_lr_ratios(OneCycleLR(opt, max_lr=0.05, total_steps=32))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_resume_keeps_the_ratios_exactly(tmp_path: Path) -> None:
    full = _ScalarOneCycle()
    fit(tmp_path / "a", full, FixedDataModule(4), max_epochs=4)
    used = torch.tensor(full.used_lrs)
    torch.testing.assert_close(used[:, 1] / used[:, 0], torch.full((32,), 0.5, dtype=used.dtype))
    first = _ScalarOneCycle()
    fit(tmp_path / "b", first, FixedDataModule(4), [every_epoch_checkpoint(tmp_path / "ckpt")], max_epochs=2)
    resumed = _ScalarOneCycle()
    fit(tmp_path / "b", resumed, FixedDataModule(4), max_epochs=4, ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    torch.testing.assert_close(torch.tensor(first.used_lrs[:16] + resumed.used_lrs), used, rtol=0, atol=0)
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
