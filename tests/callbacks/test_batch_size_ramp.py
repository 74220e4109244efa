from __future__ import annotations

import pytest
import torch
from callback_helpers import (
    FixedDataModule,
    RankDataModule,
    StopAfter,
    TinyRegressor,
    every_epoch_checkpoint,
    fit,
)
from lightning.pytorch import Callback

from lit_transfer.callbacks import BatchSizeRamp, LRScaling
from lit_transfer.callbacks.batch_size_ramp import ramp_total_steps

RELOAD = {"reload_dataloaders_every_n_epochs": 1}


class EpochLog(Callback):
    """Per epoch: batch size of batch 0, accumulation, optimizer steps, num_training_batches, first LR."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self._start = (0, 0, 0.0)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self._start = (trainer.global_step, trainer.accumulate_grad_batches, lr)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rows.append(
            (
                trainer.current_epoch,
                pl_module.first_batch_sizes[-1],
                self._start[1],
                trainer.global_step - self._start[0],
                trainer.num_training_batches,
                self._start[2],
            )
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of"),
        ({"milestones": {0: 1}, "every_n_epochs": 2}, "exactly one of"),
        ({"milestones": {0: 0}}, "factor > 0"),
        ({"milestones": {-1: 2}}, "epoch >= 0"),
        ({"every_n_epochs": 0}, "`every_n_epochs`.*0"),
        ({"every_n_epochs": 1, "factor": -2}, "`factor`.*-2"),
        ({"every_n_epochs": 1, "factor": True}, "`factor`.*True"),
        ({"every_n_epochs": 1, "max_batch_size": 0}, "`max_batch_size`.*0"),
        ({"every_n_epochs": 1, "mode": "both"}, "`mode`.*'both'"),
        ({"every_n_epochs": 1, "lr_coupling": "x"}, "`lr_coupling`.*'x'"),
        ({"every_n_epochs": 1, "rule": "cubic"}, "`rule` must be one of .*'cubic'"),
        ({"every_n_epochs": 1, "mode": "auto"}, "max_batch_size"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchSizeRamp(**kwargs)


def test_setup_checks(tmp_path) -> None:
    ramp = {"milestones": {0: 1, 1: 2}}
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        fit(tmp_path, TinyRegressor(), FixedDataModule(2), [BatchSizeRamp(**ramp)], max_epochs=2)
    with pytest.raises(ValueError, match="milestone 3 is past the last epoch"):
        fit(tmp_path, TinyRegressor(), FixedDataModule(2), [BatchSizeRamp({0: 1, 3: 2})], max_epochs=2, **RELOAD)
    with pytest.raises(AttributeError, match="`bs`"):
        fit(
            tmp_path,
            TinyRegressor(),
            FixedDataModule(2),
            [BatchSizeRamp(**ramp, batch_size_attr="bs")],
            max_epochs=2,
            **RELOAD,
        )
    with pytest.raises(ValueError, match="beyond the 32 training samples"):
        fit(tmp_path, TinyRegressor(), FixedDataModule(8), [BatchSizeRamp({0: 1, 1: 8})], max_epochs=2, **RELOAD)


def test_ramp_applies_on_time(tmp_path) -> None:
    """C1: {0: 1, 1: 2, 2: 4} relative to 2 -> batch 0 of epochs 0, 1, 2 has exactly 2, 4, 8 rows."""
    model = TinyRegressor()
    fit(tmp_path, model, FixedDataModule(2), [BatchSizeRamp({0: 1, 1: 2, 2: 4})], max_epochs=3, **RELOAD)
    assert model.first_batch_sizes == [2, 4, 8]


def test_accumulate_mode_halves_steps(tmp_path) -> None:
    model, log = TinyRegressor(), EpochLog()
    fit(
        tmp_path,
        model,
        FixedDataModule(4),
        [BatchSizeRamp(every_n_epochs=1, factor=2, mode="accumulate"), log],
        max_epochs=3,
    )
    assert [row[1:4] for row in log.rows] == [(4, 1, 8), (4, 2, 4), (4, 4, 2)]


def test_auto_mode_caps_then_accumulates(tmp_path) -> None:
    model, log = TinyRegressor(), EpochLog()
    fit(
        tmp_path,
        model,
        FixedDataModule(2),
        [BatchSizeRamp({0: 1, 1: 2, 2: 4}, mode="auto", max_batch_size=4), log],
        max_epochs=3,
        **RELOAD,
    )
    assert [row[1:4] for row in log.rows] == [(2, 1, 16), (4, 1, 8), (4, 2, 4)]


def test_manual_optimization_refused(tmp_path) -> None:
    model = TinyRegressor()
    model.automatic_optimization = False
    with pytest.raises(ValueError, match="manual optimization"):
        fit(tmp_path, model, FixedDataModule(2), [BatchSizeRamp(every_n_epochs=1, mode="accumulate")], max_epochs=2)


def test_ramp_total_steps() -> None:
    assert ramp_total_steps(32, [(2, 1), (4, 1), (8, 1)]) == 16 + 8 + 4
    assert ramp_total_steps(30, [(4, 2)]) == 4  # 8 batches, the last window is short
    assert ramp_total_steps(30, [(4, 1)], drop_last=True) == 7


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_step_schedulers_get_the_true_horizon(tmp_path, scheduler: str) -> None:
    """C3: under a 2 -> 4 -> 8 ramp the step schedule ends exactly at the last optimizer step, without error."""
    model, ramp = TinyRegressor(scheduler=scheduler), BatchSizeRamp({0: 1, 1: 2, 2: 4})
    trainer = fit(tmp_path, model, FixedDataModule(2), [ramp], max_epochs=3, **RELOAD)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 16 + 8 + 4 == ramp.total_optimizer_steps(trainer)
    assert sched.last_epoch == trainer.global_step
    if scheduler == "cosine":  # T_max reached: the LR after the last step is eta_min
        assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    else:  # the last step ran at OneCycleLR's final LR
        assert model.used_lrs[-1][0] == pytest.approx(trainer.optimizers[0].param_groups[0]["min_lr"])


def test_a_run_bounded_by_max_steps_sizes_step_schedulers_to_max_steps(tmp_path) -> None:
    """Without `max_epochs` the horizon is `max_steps`, across the ramp's epochs (not one epoch's steps)."""
    model, ramp = TinyRegressor(scheduler="cosine"), BatchSizeRamp({0: 1, 1: 2})
    trainer = fit(tmp_path, model, FixedDataModule(2), [ramp], max_epochs=-1, max_steps=20, **RELOAD)
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 20 == ramp.total_optimizer_steps(trainer)
    assert sched.T_max == 20 and sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_an_unbounded_run_cannot_size_step_schedulers(tmp_path) -> None:
    model, ramp = TinyRegressor(scheduler="cosine", total_steps=10), BatchSizeRamp({0: 1, 1: 2})
    with pytest.raises(ValueError, match=r"neither `max_epochs` nor `max_steps`"):
        fit(tmp_path, model, FixedDataModule(2), [ramp], max_epochs=-1, max_time="00:00:00:30", **RELOAD)


def test_lr_coupling_scale(tmp_path) -> None:
    model = TinyRegressor(lr=0.01, scheduler="lambda")
    fit(tmp_path, model, FixedDataModule(2), [BatchSizeRamp({0: 1, 1: 4}, lr_coupling="scale")], max_epochs=2, **RELOAD)
    # epoch 0: 16 steps at 0.01 * 0.95**t; epoch 1 continues the LambdaLR curve at 4x (linear rule for SGD)
    assert model.used_lrs[15][0] == pytest.approx(0.01 * 0.95**15)
    assert model.used_lrs[16][0] == pytest.approx(0.04 * 0.95**16)


def test_lr_coupling_uses_the_rule_lrscaling_uses(tmp_path) -> None:
    """`rule="sqrt"` on SGD: a 4x batch doubles the LR, as `LRScaling(rule="sqrt")` would."""
    model = TinyRegressor(lr=0.01, scheduler="lambda")
    ramp = BatchSizeRamp({0: 1, 1: 4}, lr_coupling="scale", rule="sqrt")
    fit(tmp_path, model, FixedDataModule(2), [ramp], max_epochs=2, **RELOAD)
    assert model.used_lrs[15][0] == pytest.approx(0.01 * 0.95**15)
    assert model.used_lrs[16][0] == pytest.approx(0.02 * 0.95**16)


def test_noise_scale_uses_the_lr_of_the_step(tmp_path) -> None:
    """Under LRScaling's warmup the logged noise scale is the warmed LR x N / B, the LR the first step uses."""
    model = TinyRegressor(lr=0.01)
    scaling = LRScaling("linear", base_batch_size=1, warmup_steps=8)
    trainer = fit(tmp_path, model, FixedDataModule(2), [scaling, BatchSizeRamp({0: 1})], max_epochs=1, **RELOAD)
    noise = float(trainer.callback_metrics["batch_size_ramp/noise_scale"])
    assert noise == pytest.approx(model.used_lrs[0][0] * 32 / 2)
    assert model.used_lrs[0][0] == pytest.approx(0.01)  # warmup starts at the unscaled LR (scale 2)


@pytest.mark.parametrize("mode", ["batch", "accumulate"])
@pytest.mark.parametrize("resume_after", [0, 1, 2])
def test_resume_at_every_boundary_is_exact(tmp_path, mode: str, resume_after: int) -> None:
    """C2: per-epoch batch, accumulation, steps, num_training_batches, LR and final weights equal the full run."""

    def callbacks() -> list:
        return [BatchSizeRamp({0: 1, 1: 2, 2: 4, 3: 8}, mode=mode, lr_coupling="scale"), EpochLog()]

    full_cbs, full = callbacks(), TinyRegressor(lr=0.005, scheduler="onecycle")
    fit(tmp_path / "a", full, FixedDataModule(2), full_cbs, max_epochs=4, **RELOAD)
    first = TinyRegressor(lr=0.005, scheduler="onecycle")
    leg = [*callbacks(), StopAfter(resume_after + 1), every_epoch_checkpoint(tmp_path / "ckpt")]
    fit(tmp_path / "b", first, FixedDataModule(2), leg, max_epochs=4, **RELOAD)
    cbs, resumed = callbacks(), TinyRegressor(lr=0.005, scheduler="onecycle")
    trainer = fit(
        tmp_path / "b",
        resumed,
        FixedDataModule(2),
        cbs,
        max_epochs=4,
        ckpt_path=tmp_path / "ckpt" / f"epoch={resume_after}.ckpt",
        **RELOAD,
    )
    assert cbs[1].rows and cbs[1].rows[0][0] == resume_after + 1 and trainer.global_step > 0
    assert cbs[1].rows == full_cbs[1].rows[resume_after + 1 :]
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


class _RankSizes(Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        sizes = torch.tensor(pl_module.first_batch_sizes)
        gathered = trainer.strategy.all_gather(sizes)
        if trainer.global_rank == 0:
            torch.save(gathered, f"{trainer.default_root_dir}/sizes.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_ranks_follow_the_ramp(tmp_path) -> None:
    fit(
        tmp_path,
        TinyRegressor(),
        RankDataModule(2),
        [BatchSizeRamp({0: 1, 1: 2}), _RankSizes()],
        max_epochs=2,
        devices=2,
        strategy="ddp_spawn",
        default_root_dir=str(tmp_path),
        **RELOAD,
    )
    assert torch.load(tmp_path / "sizes.pt").tolist() == [[2, 4], [2, 4]]
