"""The one reader of the Trainer: every fact read from real Trainers, loaders and callbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_helpers import FixedDataModule, TinyRegressor, fit, trainer_kwargs
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from lit_transfer import trainer_facts as facts
from lit_transfer.callbacks import BatchSizeRamp, LayerFreezing, LRScaling


class _Facts(Callback):
    """Reads the facts at the first training batch of the fit."""

    def __init__(self) -> None:
        self.read: dict[str, object] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.read:
            self.read = {
                "per_device": facts.per_device_batch_size(trainer),
                "global": facts.global_batch(trainer),
                "samples_per_rank": facts.samples_per_rank(trainer),
                "samples_per_epoch": facts.samples_per_epoch(trainer),
                "steps_per_epoch": facts.optimizer_steps_per_epoch(trainer),
                "step_lr_factor": facts.step_lr_factor(trainer),
                "groups": [name for name, _ in facts.named_param_groups(trainer)],
            }


def test_facts_of_a_running_fit(tmp_path: Path) -> None:
    probe = _Facts()
    fit(tmp_path, TinyRegressor(), FixedDataModule(4, n=30), [probe], max_steps=1, accumulate_grad_batches=3)
    read = probe.read
    assert read["per_device"] == 4
    assert read["global"] == facts.GlobalBatch(per_device=4, world_size=1, accumulation=3)
    assert read["global"].size == 12
    assert read["samples_per_rank"] == read["samples_per_epoch"] == 30
    assert read["steps_per_epoch"] == 3  # 8 batches, windows of 3: 3 optimizer steps
    assert read["step_lr_factor"] == 1.0
    assert read["groups"] == ["body", "head"]


def test_global_batch_counts_devices_and_nodes() -> None:
    trainer = Trainer(
        **trainer_kwargs(Path("."), devices=2, num_nodes=3, strategy="ddp_spawn", accumulate_grad_batches=2)
    )
    assert trainer.world_size == 6
    assert facts.global_batch_size(trainer, per_device=8) == 8 * 2 * 3 * 2
    assert facts.global_batch_size(trainer, per_device=8, accumulation=1) == 48


def test_per_device_batch_size_falls_back_to_the_attribute_then_explains(tmp_path: Path) -> None:
    trainer = Trainer(**trainer_kwargs(tmp_path))
    model = TinyRegressor()
    model.batch_size = 6
    trainer.strategy.connect(model)
    assert facts.per_device_batch_size(trainer) == 6
    with pytest.raises(AttributeError, match=r"int attribute `bs`.*`batch_size_attr=`"):
        facts.per_device_batch_size(trainer, batch_size_attr="bs")


def test_loader_facts() -> None:
    data = list(range(10))
    assert facts.loader_batch_size(DataLoader(data, batch_size=3)) == 3
    sampler = BatchSampler(SequentialSampler(data), batch_size=5, drop_last=False)
    assert facts.loader_batch_size(DataLoader(data, batch_sampler=sampler)) == 5
    assert facts.loader_batch_size(None) is None


def test_train_loader_is_the_first_of_several() -> None:
    data = list(range(4))
    first, second = DataLoader(data, batch_size=2), DataLoader(data, batch_size=4)
    for loaders in ([first, second], (first,), {"a": first, "b": second}, first):

        class Holder:  # what Lightning's `trainer.train_dataloader` returns for several loaders
            train_dataloader = loaders

        assert facts.train_loader(Holder()) is first


def test_param_group_names_are_lightnings(tmp_path: Path) -> None:
    """Unnamed groups get the names LearningRateMonitor logs (``pg1``, ``pg2``), named groups keep theirs."""

    class Unnamed(TinyRegressor):
        def param_groups(self):
            return [{k: v for k, v in g.items() if k != "name"} for g in super().param_groups()]

    logger = CSVLogger(tmp_path, name="log")
    trainer = fit(
        tmp_path,
        Unnamed(),
        FixedDataModule(4),
        [LearningRateMonitor("step")],
        max_steps=2,
        logger=logger,
        log_every_n_steps=1,
    )
    header = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    ours = {f"lr-SGD/{name}" for name, _ in facts.named_param_groups(trainer)}
    assert ours == {c for c in header if c.startswith("lr-")} == {"lr-SGD/pg1", "lr-SGD/pg2"}
    assert facts.param_group_name({"name": "head"}, 0) == "head"


def test_named_param_groups_prefix_several_optimizers() -> None:
    class Two:
        optimizers = [
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
            torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "name": "head"}], lr=0.2),
        ]

    assert [(n, g["lr"]) for n, g in facts.named_param_groups(Two())] == [("opt0/pg1", 0.1), ("opt1/head", 0.2)]


def test_callbacks_are_found_by_what_they_do(tmp_path: Path) -> None:
    """The package's callbacks satisfy the protocols other modules ask through, so none imports another."""
    ramp, scaling = BatchSizeRamp(every_n_epochs=1), LRScaling(warmup_steps=4)
    freezing = LayerFreezing("linear_probe")
    assert isinstance(ramp, facts.BatchSchedule) and not isinstance(scaling, facts.BatchSchedule)
    assert isinstance(scaling, facts.StepLRFactor) and not isinstance(ramp, facts.StepLRFactor)
    assert isinstance(freezing, facts.TrainableGroupCount) and not isinstance(ramp, facts.TrainableGroupCount)

    trainer = Trainer(**trainer_kwargs(tmp_path, callbacks=[scaling, ramp, freezing]))
    assert facts.batch_schedule(trainer) is ramp
    assert facts.find_callback(trainer, LRScaling) is scaling
    assert facts.find_callback(trainer, LearningRateMonitor) is None
    assert facts.trainable_group_count(trainer) is None  # before its setup
    freezing.trainable_groups = 2
    assert facts.trainable_group_count(trainer) == 2
    scaling.applied_scale, scaling.warmup_total_steps = 4.0, 4
    assert facts.step_lr_factor(trainer) == pytest.approx(0.25)  # step 0 of the warmup from the unscaled LR


def test_step_lr_factor_is_the_warmup_the_step_applies(tmp_path: Path) -> None:
    """Read outside ``optimizer.step``, the factor times ``group["lr"]`` is the LR the coming step really uses."""

    class Used(Callback):
        def __init__(self) -> None:
            self.predicted: list[float] = []
            self.used: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.predicted.append(trainer.optimizers[0].param_groups[0]["lr"] * facts.step_lr_factor(trainer))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            self.used.append(optimizer.param_groups[0]["lr"])  # inside `optimizer.step`: the warmed LR

    used = Used()
    fit(tmp_path, TinyRegressor(), FixedDataModule(4), [LRScaling("linear", 1, warmup_steps=4), used], max_steps=6)
    assert used.predicted == pytest.approx(used.used)
    assert used.used[0] < used.used[3] < used.used[4] == used.used[5]
