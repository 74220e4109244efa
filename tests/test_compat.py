"""One test per private Lightning/LightningCLI/torch access in ``lit_transfer._compat``, on the installed releases."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch
from freeze_helpers import PlainModule, fixed_data, loader
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from quiet import quiet_trainer
from torch.optim.lr_scheduler import ChainedScheduler, CyclicLR, LinearLR, OneCycleLR, ReduceLROnPlateau, StepLR

from lit_transfer import _compat


def _optimizer() -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]}, {"params": [torch.nn.Parameter(torch.zeros(2))]}]
    return torch.optim.SGD(groups, lr=0.1)


def test_lightning_cli_members_the_cli_overrides_exist() -> None:
    for name, params in _compat.LIGHTNING_CLI_OVERRIDES.items():
        member = inspect.getattr_static(LightningCLI, name, None)
        if member is None:  # an attribute set in __init__
            assert name in inspect.getsource(LightningCLI.__init__) + inspect.getsource(LightningCLI), name
            continue
        assert callable(member), name
        assert set(params) <= set(inspect.signature(member).parameters), name


class _Probe(L.Callback):
    """Records is_accumulating at every batch, and swaps the validation loaders once."""

    def __init__(self) -> None:
        self.accumulating: list[bool] = []
        self.swapped = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.accumulating.append(_compat.is_accumulating(trainer))

    def on_validation_start(self, trainer, pl_module) -> None:
        def replace(loaders):
            assert len(loaders) == 1
            return [loader(fixed_data(n=3), batch_size=3)]

        self.swapped += _compat.replace_loop_dataloaders(trainer.fit_loop.epoch_loop.val_loop, replace)


class _Validated(PlainModule):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def validation_step(self, batch, batch_idx) -> None:
        self.seen.append(len(batch[0]))


def test_is_accumulating_and_replace_loop_dataloaders(tmp_path) -> None:
    probe = _Probe()
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=4, accumulate_grad_batches=2, callbacks=[probe])
    model = _Validated()
    trainer.fit(model, loader(fixed_data(n=8), batch_size=2), loader(fixed_data(n=8), batch_size=8))
    seen = model.seen
    assert probe.accumulating == [True, False, True, False]
    assert probe.swapped == 1 and seen == [3]  # validation iterated the replacement, not the original
    assert _compat.replace_loop_dataloaders(object(), lambda loaders: loaders) is False  # a loop without data


def test_child_schedulers() -> None:
    optimizer = _optimizer()
    chained = ChainedScheduler([StepLR(optimizer, 1), LinearLR(optimizer)])
    assert [type(s) for s in _compat.child_schedulers(chained)] == [StepLR, LinearLR]
    assert list(_compat.child_schedulers(StepLR(optimizer, 1))) == []


def test_set_scheduler_last_lr() -> None:
    scheduler = StepLR(_optimizer(), 1)
    _compat.set_scheduler_last_lr(scheduler, [0.5, 0.25])
    assert scheduler.get_last_lr() == [0.5, 0.25]


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda o: StepLR(o, 1), {"base_lrs", "_last_lr"}),
        (lambda o: ReduceLROnPlateau(o), {"min_lrs"}),
        (lambda o: CyclicLR(o, 0.01, 0.1), {"base_lrs", "max_lrs", "_last_lr"}),
    ],
)
def test_per_group_lr_lists_exist(make, names) -> None:
    scheduler = make(_optimizer())
    assert names <= set(_compat.PER_GROUP_LR_LISTS)
    for name in names:
        assert isinstance(getattr(scheduler, name), list) and len(getattr(scheduler, name)) == 2, name


def test_one_cycle_phases() -> None:
    scheduler = OneCycleLR(_optimizer(), max_lr=0.1, total_steps=100, pct_start=0.3)
    phases = _compat.one_cycle_phases(scheduler)
    assert [round(p["end_step"]) for p in phases] == [29, 99]
    assert {"start_lr", "end_lr"} <= set(phases[0])


class _FrozenBackbone(PlainModule):
    """The backbone is frozen in `setup`, before DDP wraps the module."""

    def setup(self, stage: str) -> None:
        self.backbone.requires_grad_(False)


class _Rewrap(L.Callback):
    """At epoch 1: unfreezes the backbone, wraps the module in DDP again, records both wrappers' registrations."""

    def __init__(self) -> None:
        self.registered: list[int] = []
        self.same_module = False
        self.rewrapped = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != 1:
            return
        old = trainer.strategy.model
        pl_module.backbone.requires_grad_(True)
        self.rewrapped = _compat.rewrap_ddp(trainer.strategy)
        new = trainer.strategy.model
        self.same_module = new is not old and new.module is pl_module
        self.registered = [w._get_ddp_logging_data()["num_parameter_tensors"] for w in (old, new)]


def test_rewrap_ddp(tmp_path) -> None:
    assert hasattr(DDPStrategy(), "_pl_static_graph_delay_done")
    assert callable(torch.nn.parallel.DistributedDataParallel._remove_autograd_hooks)
    assert _compat.rewrap_ddp(SingleDeviceStrategy("cpu")) is False
    model, probe = _FrozenBackbone(), _Rewrap()
    frozen = model.backbone[0].weight.detach().clone()
    trainer = quiet_trainer(
        tmp_path,
        strategy="ddp",  # one process: a real DDP wrapper over a gloo group of one
        max_epochs=2,
        callbacks=[probe],
    )
    try:
        trainer.fit(model, loader(fixed_data(n=8), batch_size=4))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert probe.rewrapped and probe.same_module
    assert probe.registered == [2, 8]  # the head's weight and bias; then the backbone's 6 tensors too
    assert not torch.equal(frozen, model.backbone[0].weight)  # the unfrozen backbone trained after the re-wrap


def test_metric_update_count() -> None:
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=3)
    assert _compat.metric_update_count(metric) == 0
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
    metric.update(torch.tensor([2]), torch.tensor([2]))
    assert _compat.metric_update_count(metric) == 2
    metric.reset()
    assert _compat.metric_update_count(metric) == 0


class _Logged(PlainModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("probe", float(batch_idx))
        return loss


def test_reset_fit_loop_data_and_logged_results(tmp_path) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(_Logged(), loader(fixed_data()))
    loop = trainer.fit_loop
    assert loop._combined_loader is not None and "probe" in trainer.callback_metrics
    _compat.reset_fit_loop_data(loop)
    assert loop._data_fetcher is None and loop._combined_loader is None
    _compat.reset_logged_results(trainer)
    assert "probe" not in trainer.callback_metrics
    assert not trainer.logged_metrics


def test_hub_offline(tmp_path, monkeypatch) -> None:
    """Inside, huggingface_hub answers from the cache without a request (a miss raises at once); after, as before."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with _compat.hub_offline():
        assert constants.HF_HUB_OFFLINE
        with pytest.raises(LocalEntryNotFoundError):  # the hub's own download honours it
            huggingface_hub.hf_hub_download("timm/resnet18.a1_in1k", "config.json", cache_dir=tmp_path)
    assert not constants.HF_HUB_OFFLINE
    with _compat.hub_offline(False):
        assert not constants.HF_HUB_OFFLINE


def _sleep() -> None:
    import time

    time.sleep(60)


def test_stop_spawned_workers_signals_the_spawn_launchers_live_workers_only() -> None:
    import multiprocessing
    import signal

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    assert not _compat.stop_spawned_workers(trainer, signal.SIGTERM)  # nothing launched yet
    assert not _compat.stop_spawned_workers(L.Trainer(accelerator="cpu", devices=1, logger=False), signal.SIGTERM)
    worker = multiprocessing.get_context("spawn").Process(target=_sleep)
    worker.start()
    try:
        trainer.strategy.launcher.procs = [worker]  # where the launcher keeps the workers it started
        assert _compat.stop_spawned_workers(trainer, signal.SIGTERM)
        worker.join(timeout=30)
        assert worker.exitcode == -signal.SIGTERM
        assert not _compat.stop_spawned_workers(trainer, signal.SIGTERM)  # it no longer runs
    finally:
        if worker.is_alive():
            worker.kill()
            worker.join()


def _tell_launcher(parent: int, results) -> None:  # a spawned process, as a ddp_spawn worker is
    import os
    import signal

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    told = []
    for launcher in (parent + 1, parent):  # another process handles stop signals, then the parent
        os.environ[_compat.STOP_SIGNALS_PID_ENV] = str(launcher)
        told.append(_compat.tell_spawn_launcher(trainer, signal.SIGUSR1))
    results.put(told)


def test_tell_spawn_launcher_signals_only_a_parent_that_handles_stop_signals() -> None:
    import multiprocessing
    import os
    import signal

    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    try:
        worker = context.Process(target=_tell_launcher, args=(os.getpid(), results))
        worker.start()
        worker.join(timeout=120)
        assert worker.exitcode == 0 and results.get(timeout=10) == [False, True]
        assert received == [signal.SIGUSR1]  # once: from the second call
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
        assert not _compat.tell_spawn_launcher(trainer, signal.SIGUSR1)  # not a spawned worker
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_unwrapped_sampler() -> None:
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from torch.utils.data import WeightedRandomSampler

    weighted = WeightedRandomSampler([1.0, 2.0, 3.0], num_samples=3)
    assert _compat.unwrapped_sampler(DistributedSamplerWrapper(weighted, num_replicas=2, rank=0)) is weighted
    assert _compat.unwrapped_sampler(weighted) is weighted


@pytest.mark.parametrize(
    ("strategy", "pickles"),
    [
        ("ddp_spawn", True),
        ("ddp_spawn_find_unused_parameters_true", True),
        (DDPStrategy(start_method="spawn"), True),
        (DDPStrategy(start_method="forkserver"), True),
        ("ddp", False),
        ("ddp_fork", False),
        (DDPStrategy(), False),
        ("auto", False),
        (None, False),
    ],
)
def test_pickles_for_workers(strategy, pickles: bool) -> None:
    assert _compat.pickles_for_workers(strategy) is pickles


def test_ema_decay() -> None:
    from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging, WeightAveraging

    assert _compat.ema_decay(EMAWeightAveraging(decay=0.97)) == pytest.approx(0.97)
    assert _compat.ema_decay(EMAWeightAveraging()) == pytest.approx(0.999)  # Lightning's default
    assert _compat.ema_decay(WeightAveraging()) is None  # an equal-weight average (SWA)
    assert _compat.ema_decay(StochasticWeightAveraging(swa_lrs=0.1)) is None


def test_track_average_swaps_and_unswap_average() -> None:
    from lightning.pytorch.callbacks import WeightAveraging
    from lightning.pytorch.demos.boring_classes import BoringModel

    module = BoringModel()
    callback = WeightAveraging()
    callback.setup(None, module, "fit")  # type: ignore[arg-type]  # the average: a copy of the weights now
    training = {n: p.detach().clone() for n, p in module.named_parameters()}
    with torch.no_grad():
        for p in callback._average_model.module.parameters():  # an average that differs from the weights
            p.add_(1.0)
    _compat.track_average_swaps(callback)
    _compat.track_average_swaps(callback)  # twice: still one wrapper
    callback.on_validation_epoch_start(None, module)  # type: ignore[arg-type]
    assert not torch.equal(module.layer.weight, training["layer.weight"])  # the average is in the model
    assert _compat.unswap_average(callback, module)
    for name, p in module.named_parameters():
        assert torch.equal(p, training[name])
    assert not _compat.unswap_average(callback, module)  # already swapped back
    callback.on_validation_epoch_start(None, module)  # type: ignore[arg-type]
    callback.on_validation_epoch_end(None, module)  # type: ignore[arg-type]
    assert not _compat.unswap_average(callback, module)  # a finished validation leaves nothing to undo
    assert not _compat.unswap_average(WeightAveraging(), module)  # an untracked callback is not known
