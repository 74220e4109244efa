from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from callback_helpers import SCHEDULERS, FixedDataModule, RankDataModule, TinyRegressor, every_epoch_checkpoint, fit
from lightning.pytorch import Callback

from lit_transfer.callbacks import BatchSizeRamp, LRScaling
from lit_transfer.optim.batch_rules import default_rule, scale_factor


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rule": "cubic"}, "`rule`.*'cubic'"),
        ({"base_batch_size": 0}, "`base_batch_size`.*0"),
        ({"base_batch_size": -8}, "`base_batch_size`.*-8"),
        ({"warmup_epochs": -1}, "`warmup_epochs`.*-1"),
        ({"warmup_steps": -2}, "`warmup_steps`.*-2"),
        ({"warmup_epochs": 1, "warmup_steps": 5}, "either `warmup_epochs`"),
        ({"warmup_start_factor": 0.0}, "`warmup_start_factor`"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LRScaling(**kwargs)


def test_rule_table() -> None:
    assert scale_factor("linear", 1024, 256) == 4.0
    assert scale_factor("sqrt", 1024, 256) == 2.0
    assert scale_factor("linear", 64, 256) == 0.25
    params = [torch.nn.Parameter(torch.zeros(1))]
    for cls in (
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.Adamax,
        torch.optim.NAdam,
        torch.optim.RAdam,
        torch.optim.Adagrad,
    ):
        assert default_rule(cls(params)) == "sqrt"
    for cls in (torch.optim.SGD, torch.optim.ASGD):
        assert default_rule(cls(params, lr=0.1)) == "linear"


def _first_lrs(model: TinyRegressor) -> list[float]:
    return model.used_lrs[0]


@pytest.mark.parametrize(("optimizer", "expected"), [("sgd", 4.0), ("adam", 2.0)])
def test_default_rule_applied(tmp_path, optimizer: str, expected: float) -> None:
    plain = TinyRegressor(optimizer=optimizer)
    fit(tmp_path, plain, FixedDataModule(4), max_steps=1)
    scaled = TinyRegressor(optimizer=optimizer)
    cb = LRScaling(base_batch_size=1)
    fit(tmp_path, scaled, FixedDataModule(4), [cb], max_steps=1)
    assert cb.applied_rule == ("linear" if optimizer == "sgd" else "sqrt")
    assert cb.applied_scale == expected
    assert _first_lrs(scaled) == pytest.approx([expected * lr for lr in _first_lrs(plain)])


def test_accumulation_counts(tmp_path) -> None:
    cb = LRScaling(rule="linear", base_batch_size=4)
    fit(tmp_path, TinyRegressor(), FixedDataModule(4), [cb], max_steps=1, accumulate_grad_batches=2)
    assert cb.reference_batch == 8
    assert cb.applied_scale == 2.0


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_scaling_composes_with_schedulers(tmp_path, scheduler: str) -> None:
    """x4 scaling on two groups of different LRs == the unscaled run's LR x4 == a run configured at 4x LR."""
    interval = "epoch" if scheduler == "plateau" else "step"
    runs = {}
    for name, lr, callbacks in [
        ("plain", 0.01, []),
        ("scaled", 0.01, [LRScaling(rule="linear", base_batch_size=1)]),
        ("reference", 0.04, []),
    ]:
        model = TinyRegressor(lr=lr, scheduler=scheduler, interval=interval)
        fit(tmp_path, model, FixedDataModule(4), callbacks, max_epochs=2)
        runs[name] = model
    scaled, plain, reference = (torch.tensor(runs[k].used_lrs) for k in ("scaled", "plain", "reference"))
    assert scaled.shape == (16, 2)
    if scheduler != "plateau":  # plateau decisions depend on the loss, which differs at another LR
        for step in (0, 1, 10):
            torch.testing.assert_close(scaled[step], 4 * plain[step])
    torch.testing.assert_close(scaled, reference)  # the whole trajectory, both groups
    assert torch.allclose(scaled[:, 1] / scaled[:, 0], torch.full((16,), 0.5))  # layer-decay ratio kept


class _RecordGlobalStep(Callback):
    def __init__(self) -> None:
        self.start_step: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step


@pytest.mark.parametrize("scheduler", ["step", "lambda", "onecycle"])
def test_warmup_values_and_composition(tmp_path, scheduler: str) -> None:
    """Warmup from the unscaled LR to the scaled one over 4 steps; afterwards exactly the scaled schedule."""
    ref = TinyRegressor(lr=0.04, scheduler=scheduler)
    fit(tmp_path, ref, FixedDataModule(4), max_epochs=2)
    model = TinyRegressor(lr=0.01, scheduler=scheduler)
    cb = LRScaling(rule="linear", base_batch_size=1, warmup_steps=4)
    fit(tmp_path, model, FixedDataModule(4), [cb], max_epochs=2)
    used, sched = torch.tensor(model.used_lrs), torch.tensor(ref.used_lrs)
    factors = torch.tensor([0.25 + 0.75 * t / 4 for t in range(4)])
    torch.testing.assert_close(used[:4], sched[:4] * factors[:, None])
    # the schedule itself was never corrupted by the warmup: after warmup the LR is the scaled schedule's
    torch.testing.assert_close(used[4:], sched[4:])


def test_warmup_factor_reaches_the_logger_on_its_logging_steps(tmp_path) -> None:
    """The logged factor is the closed form 0.25 + 0.75 * step / 6, and the factor training actually used."""
    from lightning.pytorch.loggers import CSVLogger

    cb = LRScaling(rule="linear", base_batch_size=1, warmup_steps=6)
    logger = CSVLogger(tmp_path, name="log")
    model = TinyRegressor(lr=0.01)
    fit(tmp_path, model, FixedDataModule(4), [cb], max_epochs=1, logger=logger, log_every_n_steps=2)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("lr_scaling/warmup_factor")
    step_column = rows[0].split(",").index("step")
    logged = {int(r.split(",")[step_column]): float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]}
    expected = {1: 0.375, 3: 0.625, 5: 0.875}
    assert {step: logged[step] for step in expected} == pytest.approx(expected)
    assert {s: model.used_lrs[s][0] / (4 * 0.01) for s in expected} == pytest.approx(expected)


def test_warmup_epochs_converts_to_steps(tmp_path) -> None:
    cb = LRScaling(rule="linear", base_batch_size=4, warmup_epochs=0.5)
    fit(tmp_path, TinyRegressor(), FixedDataModule(4), [cb], max_steps=1)
    assert cb.warmup_total_steps == 4  # 8 steps per epoch


@pytest.mark.parametrize("scheduler", ["step", "lambda", "onecycle", "sequential"])
def test_resume_is_exact(tmp_path, scheduler: str) -> None:
    """Resume mid-warmup and mid-schedule: same LRs per step and same weights as the uninterrupted run."""
    make = lambda: TinyRegressor(lr=0.01, scheduler=scheduler, total_steps=32)  # noqa: E731
    cb = lambda: LRScaling(rule="linear", base_batch_size=1, warmup_steps=12)  # noqa: E731
    full = make()
    fit(tmp_path / "a", full, FixedDataModule(4), [cb()], max_epochs=4)
    first = make()
    fit(tmp_path / "b", first, FixedDataModule(4), [cb(), every_epoch_checkpoint(tmp_path / "ckpt")], max_epochs=1)
    resumed, rec = make(), _RecordGlobalStep()
    trainer = fit(
        tmp_path / "b",
        resumed,
        FixedDataModule(4),
        [cb(), rec],
        max_epochs=4,
        ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt",
    )
    assert rec.start_step == 8 and trainer.global_step == 32
    torch.testing.assert_close(torch.tensor(first.used_lrs + resumed.used_lrs), torch.tensor(full.used_lrs))
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_resume_with_other_accumulation_rescales(tmp_path) -> None:
    """A resume with a different global batch rescales by the ratio (after the optimizer restore)."""
    first = TinyRegressor(lr=0.01, scheduler="lambda")
    fit(
        tmp_path,
        first,
        FixedDataModule(4),
        [LRScaling(rule="linear", base_batch_size=1), every_epoch_checkpoint(tmp_path / "ckpt")],
        max_epochs=1,
    )
    resumed, cb = TinyRegressor(lr=0.01, scheduler="lambda"), LRScaling(rule="linear", base_batch_size=1)
    fit(
        tmp_path,
        resumed,
        FixedDataModule(4),
        [cb],
        max_epochs=2,
        accumulate_grad_batches=2,
        ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt",
    )
    assert cb.applied_scale == 8.0 and cb.reference_batch == 8
    # LambdaLR(0.95**step) continues from step 8 at twice the previous scale
    assert resumed.used_lrs[0][0] == pytest.approx(0.01 * 8 * 0.95**8)


def test_keys_on_initial_batch_under_ramp(tmp_path) -> None:
    model, cb = TinyRegressor(lr=0.01), LRScaling(rule="linear", base_batch_size=2)
    ramp = BatchSizeRamp(milestones={0: 1, 1: 2})
    fit(tmp_path, model, FixedDataModule(2), [cb, ramp], max_epochs=2, reload_dataloaders_every_n_epochs=1)
    assert model.first_batch_sizes == [2, 4]
    assert [lrs[0] for lrs in model.used_lrs] == pytest.approx([0.01] * 24)  # 16 + 8 steps, LR held


def test_follow_batch_ramp(tmp_path) -> None:
    model, cb = TinyRegressor(lr=0.01), LRScaling(rule="linear", base_batch_size=2, follow_batch_ramp=True)
    ramp = BatchSizeRamp(milestones={0: 1, 1: 2})
    fit(tmp_path, model, FixedDataModule(2), [cb, ramp], max_epochs=2, reload_dataloaders_every_n_epochs=1)
    assert model.used_lrs[0][0] == pytest.approx(0.01)
    assert model.used_lrs[-1][0] == pytest.approx(0.02)


def test_follow_batch_ramp_refuses_a_ramp_that_scales_too(tmp_path) -> None:
    callbacks = [LRScaling(follow_batch_ramp=True), BatchSizeRamp({0: 1, 1: 2}, lr_coupling="scale")]
    with pytest.raises(
        ValueError, match=r"BatchSizeRamp\(lr_coupling='scale'\) and LRScaling\(follow_batch_ramp=True\)"
    ):
        fit(tmp_path, TinyRegressor(), FixedDataModule(2), callbacks, max_epochs=2, reload_dataloaders_every_n_epochs=1)


def test_composes_with_a_ramp_that_scales(tmp_path) -> None:
    """LRScaling scales base -> initial batch, the ramp initial -> live batch: one rule, applied by one module."""
    model = TinyRegressor(lr=0.01)
    callbacks = [LRScaling(rule="linear", base_batch_size=1), BatchSizeRamp({0: 1, 1: 2}, lr_coupling="scale")]
    fit(tmp_path, model, FixedDataModule(2), callbacks, max_epochs=2, reload_dataloaders_every_n_epochs=1)
    assert [lrs[0] for lrs in model.used_lrs] == pytest.approx([0.02] * 16 + [0.04] * 8)


class _CaptureLR(Callback):
    def __init__(self) -> None:
        self.lr = math.nan

    def on_train_end(self, trainer, pl_module) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
        assert trainer.strategy.reduce(torch.tensor(self.lr), reduce_op="sum").item() == pytest.approx(
            self.lr * trainer.world_size
        )
        if trainer.global_rank == 0:
            torch.save(torch.tensor(self.lr), trainer.default_root_dir + "/lr.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_global_batch(tmp_path) -> None:
    """devices=2 at half the per-device batch gives the devices=1 LR (same global batch)."""
    one = LRScaling(rule="linear", base_batch_size=2)
    (tmp_path / "two").mkdir()
    fit(tmp_path / "one", TinyRegressor(lr=0.01), FixedDataModule(8), [one], max_steps=1)
    fit(
        tmp_path / "two",
        TinyRegressor(lr=0.01),
        RankDataModule(4),
        [LRScaling(rule="linear", base_batch_size=2), _CaptureLR()],
        max_steps=1,
        devices=2,
        strategy="ddp_spawn",
        default_root_dir=str(tmp_path / "two"),
    )
    assert torch.load(tmp_path / "two" / "lr.pt").item() == pytest.approx(0.01 * one.applied_scale)
    assert one.applied_scale == 4.0


def test_epoch_smaller_than_the_global_batch_scales_for_the_epoch(tmp_path) -> None:
    """85 images and a global batch of 256 is a global batch of 85: scale (and warn) for the samples a step sees."""
    plain = TinyRegressor()
    fit(tmp_path, plain, FixedDataModule(16, n=24), max_steps=1)
    scaled, cb = TinyRegressor(), LRScaling(rule="linear", base_batch_size=8)
    with pytest.warns(
        UserWarning,
        match=r"global batch is 64 \(`batch_size` 16 x 1 device\(s\) x `accumulate_grad_batches` 4\) but an epoch holds"
        r" only 24 training samples.*effective global batch of 24.*Set `batch_size` below 24",
    ):
        fit(tmp_path, scaled, FixedDataModule(16, n=24), [cb], max_steps=1, accumulate_grad_batches=4)
    assert cb.reference_batch == 24 and cb.applied_scale == 3.0
    assert _first_lrs(scaled) == pytest.approx([3.0 * lr for lr in _first_lrs(plain)])
