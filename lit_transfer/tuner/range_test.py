"""The LR range test inside a running ``fit``: what it trains, how it ramps the LR, how it leaves no trace.

:func:`run_range_test` is called from a callback's ``on_fit_start`` (after Lightning has set up the strategy, the
optimizer and the schedulers, and after ``LayerFreezing.setup`` has frozen the first phase). It runs Lightning's
own fit loop for at most ``num_steps`` optimizer steps, so precision, gradient accumulation and clipping, DDP and
the module's own hooks behave as in the fit, with:

* **What the first phase trains.** The :class:`~lit_transfer.callbacks.LayerFreezing` callbacks stay active with
  their policy pinned to epoch 0, so a test longer than an epoch still trains only the groups the first phase
  trains (frozen groups stay frozen, their BatchNorm in eval mode). Every other callback, the loggers, validation
  and the LR schedulers are set aside for the test.
* **One factor for every group.** At step ``k`` each param group's LR is its base LR (``initial_lr``, else
  ``lr``) times ``lr_k / reference``, where ``reference`` is the optimizer's configured LR (``defaults["lr"]``,
  the head's under layer decay) and ``lr_k`` ramps exponentially from ``min_lr`` to ``max_lr``: layer-decay ratios
  and any per-group multiplier are kept.
* **Head steps on cached features.** When the first phase trains the head alone on a frozen backbone (a linear
  probe, freeze-unfreeze's first epochs; no mixup), the backbone's features of the training data are computed
  once, at the test's first epoch, by a :class:`~lit_transfer.callbacks.FeatureCache`, and every step runs the head
  on them, served through the loader's own batch sampler (same batches, same order): a step costs the head's
  forward and backward instead of a backbone's forward. The features are the pre-logit ones when the head group is
  the classifier alone, else the output of ``forward_features`` (a head with its own layers, as MobileNetV3's and
  ConvNeXt's, runs them on it at every step). On data without augmentation the curve is the one the steps on
  images give (checked in ``tests/tuner/test_range_test_cache.py``); with augmentation every epoch of the test
  sees the one view of each sample drawn for that pass, where steps on images see a fresh view per epoch.
  ``cache_features=False`` runs every step on images; the module opts in through ``head_on_features``
  (:class:`~lit_transfer.models.base.TransferModule`).
* **Exact restoration.** Afterwards the parameters (values, ``requires_grad``, ``.grad``), buffers, module modes,
  the optimizers' state and LRs, the schedulers, the precision plugin, the fit loop's progress, the global RNG
  states and the trainer's settings are put back, and torchmetrics objects the test updated are reset: the fit
  that follows runs as if no test had happened (checked bit for bit on CPU in ``tests/tuner/test_lr_finder.py``).

The loss recorded at each step is the training step's loss averaged over ranks, so every rank stops at the same
step and suggests the same LR.
"""

from __future__ import annotations

import copy
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from torchmetrics import Metric
from typing_extensions import override

from lit_transfer._compat import metric_update_count, reset_fit_loop_data, reset_logged_results
from lit_transfer.callbacks.feature_cache import FeatureCache
from lit_transfer.callbacks.layer_freezing import LayerFreezing
from lit_transfer.errors import check_int, is_number
from lit_transfer.freezing import FreezingPolicy
from lit_transfer.trainer_facts import callbacks_of
from lit_transfer.tuner.suggest import DEFAULT_SMOOTHING

__all__ = ["RangeTestCurve", "check_range", "reference_lr", "run_range_test"]


@dataclass
class RangeTestCurve:
    """What a range test recorded: the reference LR and the raw training loss of each step."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    cached_features: bool = False


def check_range(min_lr: float, max_lr: float, num_steps: int, diverge_factor: float | None) -> None:
    """Refuse a range that cannot be ramped, naming the argument and the fix."""
    if not (is_number(min_lr) and min_lr > 0 and math.isfinite(min_lr)):
        raise ValueError(f"`min_lr` must be a positive number, got {min_lr!r}.")
    if not (is_number(max_lr) and max_lr > min_lr and math.isfinite(max_lr)):
        raise ValueError(f"`max_lr` must be a number larger than `min_lr` ({min_lr!r}), got {max_lr!r}.")
    check_int("num_steps", num_steps, minimum=5, expected="an integer of at least 5 (100 is usual)")
    if diverge_factor is not None and not diverge_factor > 1:
        raise ValueError(
            f"`diverge_factor` must be larger than 1 (or None to never stop early), got {diverge_factor!r}."
        )


def reference_lr(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's configured LR (``defaults["lr"]``): the head's LR, the one ``min_lr``/``max_lr`` refer to."""
    lr = optimizer.defaults.get("lr")
    if isinstance(lr, torch.Tensor):
        lr = float(lr)
    if not is_number(lr) or not lr > 0:
        raise ValueError(
            f"The optimizer {type(optimizer).__name__} has no positive configured `lr` ({lr!r}) to scale the param"
            " groups' LRs by: build it with an `lr`."
        )
    return float(lr)


def _base_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's LR before any scheduler step (``initial_lr``, which schedulers write at construction)."""
    return [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]


class _FirstPhase:
    """A freezing policy's stand-in that answers every epoch with the policy's epoch-0 phase."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def trainable_depth(self, epoch: int, num_groups: int) -> int:
        return int(self.policy.trainable_depth(0, num_groups))

    def trainable_mask(self, epoch: int, num_groups: int) -> Any:
        return self.policy.trainable_mask(0, num_groups)


class _Ramp(Callback):
    """Sets the ramped LR before each optimizer step and records the loss; stops at the end or on divergence."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        min_lr: float,
        max_lr: float,
        num_steps: int,
        smoothing: float,
        diverge_factor: float | None,
    ) -> None:
        self.optimizer = optimizer
        self.ratios = [base / reference_lr(optimizer) for base in _base_lrs(optimizer)]
        self.min_lr, self.max_lr, self.num_steps = min_lr, max_lr, num_steps
        self.smoothing, self.diverge_factor = smoothing, diverge_factor
        self.curve = RangeTestCurve()
        self._start_step = 0
        self._batch_losses: list[torch.Tensor] = []
        self._average = 0.0
        self._best = math.inf

    def lr_at(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.num_steps - 1))

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_step = trainer.global_step

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        lr = self.lr_at(trainer.global_step - self._start_step)
        for group, ratio in zip(self.optimizer.param_groups, self.ratios):
            group["lr"] = lr * ratio

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            raise ValueError("The LR range test needs `training_step` to return the loss (a tensor or {'loss': ...}).")
        self._batch_losses.append(loss.detach().float())
        step = trainer.global_step - self._start_step
        if step == len(self.curve.lrs):  # gradient accumulation: the optimizer has not stepped yet
            return
        mean = torch.stack(self._batch_losses).mean()
        self._batch_losses = []
        value = float(trainer.strategy.reduce(mean, reduce_op="mean"))
        self.curve.lrs.append(self.lr_at(step - 1))
        self.curve.losses.append(value)
        if self._diverged(value, step) or step >= self.num_steps:
            self.curve.stopped_early = step < self.num_steps
            trainer.should_stop = True

    def _diverged(self, value: float, step: int) -> bool:
        if not math.isfinite(value):
            return True
        self._average = self.smoothing * self._average + (1 - self.smoothing) * value
        smoothed = self._average / (1 - self.smoothing**step)
        self._best = min(self._best, smoothed)
        return self.diverge_factor is not None and step > 1 and smoothed > self.diverge_factor * self._best


class _HeadOnFeatures(Callback):
    """From the test's first epoch on, serve the training batches as frozen features when only the head trains.

    Listed after the freezing callbacks, so the first phase's ``requires_grad`` flags and module modes are set when
    it looks at them.
    """

    def __init__(self, wanted: bool | None, stack: ExitStack) -> None:
        self.wanted = wanted
        self.stack = stack
        self.cache: FeatureCache | None = None
        self._decided = False

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._decided:
            self._decided = True
            self.cache = self._cache_for(pl_module) if self.wanted is not False else None
        if self.cache is not None:
            self.cache.serve_training(trainer)

    def _cache_for(self, pl_module: LightningModule) -> FeatureCache | None:
        opt_in = getattr(pl_module, "head_on_features", None)
        extract = self.stack.enter_context(opt_in()) if callable(opt_in) else None
        if extract is None and self.wanted:
            raise ValueError(
                "The LR range test's `cache_features` is true, but the first phase of this"
                f" {type(pl_module).__name__} trains more than the head on a frozen backbone (cached features"
                " need e.g. `freeze: linear_probe` or `freeze_unfreeze` of a lit_transfer model, no mixup). Leave"
                " `cache_features` unset (decide) or set it to false."
            )
        return None if extract is None else FeatureCache(extract)


class _Snapshot:
    """Everything a range test changes, taken at ``on_fit_start`` and put back afterwards."""

    def __init__(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trainer, self.module = trainer, pl_module
        # The module's own tensors and sub-modules, listed once (walking a deep model's tree costs milliseconds)
        with torch.no_grad():
            self.params = [
                (p, p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.detach().clone())
                for _, p in pl_module.named_parameters(remove_duplicate=False)
            ]
            self.buffers = [(b, b.detach().clone()) for _, b in pl_module.named_buffers(remove_duplicate=False)]
        self.modes = [(m, m.training) for _, m in pl_module.named_modules(remove_duplicate=False)]
        self.optimizers = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
        self.scheduler_configs = list(trainer.strategy.lr_scheduler_configs)
        self.schedulers = [copy.deepcopy(c.scheduler.state_dict()) for c in self.scheduler_configs]
        self.precision = copy.deepcopy(trainer.precision_plugin.state_dict())
        self.loop = copy.deepcopy(trainer.fit_loop.state_dict())
        self.metric_updates = {id(m): metric_update_count(m) for m in pl_module.modules() if isinstance(m, Metric)}
        loop = trainer.fit_loop
        self.settings: dict[str, Any] = {
            "callbacks": callbacks_of(trainer),
            "loggers": trainer.loggers,
            "limit_val_batches": trainer.limit_val_batches,
            "max_epochs": loop.max_epochs,
            "min_epochs": loop.min_epochs,
            "max_steps": loop.epoch_loop.max_steps,
            "min_steps": loop.epoch_loop.min_steps,
            "should_stop": trainer.should_stop,
        }
        self.freezing = [(c, dict(vars(c))) for c in callbacks_of(trainer) if isinstance(c, LayerFreezing)]

    def restore(self) -> None:
        trainer, module = self.trainer, self.module
        loop = trainer.fit_loop
        reset_fit_loop_data(loop)  # the fit sets up its own loader and iterator, as without a test
        trainer.callbacks = self.settings["callbacks"]  # type: ignore[attr-defined]  # set by Lightning, undeclared
        trainer.loggers = self.settings["loggers"]
        trainer.limit_val_batches = self.settings["limit_val_batches"]
        loop.max_epochs, loop.min_epochs = self.settings["max_epochs"], self.settings["min_epochs"]
        loop.epoch_loop.max_steps, loop.epoch_loop.min_steps = self.settings["max_steps"], self.settings["min_steps"]
        trainer.should_stop = self.settings["should_stop"]
        for callback, attributes in self.freezing:
            vars(callback).update(attributes)
        with torch.no_grad():
            for p, value, requires_grad, grad in self.params:
                p.copy_(value)
                p.requires_grad_(requires_grad)
                p.grad = grad
            for b, value in self.buffers:
                b.copy_(value)
        for m, training in self.modes:
            m.training = training
        for optimizer, state in zip(trainer.optimizers, self.optimizers):
            optimizer.load_state_dict(state)
        trainer.strategy.lr_scheduler_configs = self.scheduler_configs
        for config, state in zip(self.scheduler_configs, self.schedulers):
            config.scheduler.load_state_dict(state)
        trainer.precision_plugin.load_state_dict(self.precision)
        loop.load_state_dict(self.loop)
        loop.restarting = False  # loading a state marks the loops as restarting: the fit starts where it was
        loop.epoch_loop.restarting = False
        for metric in module.modules():
            if isinstance(metric, Metric) and metric_update_count(metric) != self.metric_updates.get(id(metric)):
                metric.reset()
        reset_logged_results(trainer)


def run_range_test(
    trainer: Trainer,
    pl_module: LightningModule,
    min_lr: float,
    max_lr: float,
    num_steps: int,
    smoothing: float = DEFAULT_SMOOTHING,
    diverge_factor: float | None = 4.0,
    cache_features: bool | None = None,
) -> RangeTestCurve:
    """Run an LR range test of the module's first freezing phase from ``on_fit_start``; leave no trace.

    Args:
        trainer: The Trainer, inside ``fit`` (strategy, optimizer and schedulers set up).
        pl_module: Its LightningModule.
        min_lr: The reference LR of the first step (the optimizer's configured ``lr``, the head's).
        max_lr: The reference LR of the last step.
        num_steps: Optimizer steps of the ramp.
        smoothing: Exponential smoothing of the loss used to detect divergence.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum (``None``: never).
        cache_features: Run the head's steps on features the frozen backbone computed once: ``None`` (default)
            when the first phase trains the head alone, ``True`` to require it, ``False`` never.

    Returns:
        The recorded curve (reference LR and raw loss per step).

    Raises:
        ValueError: For a module with several optimizers or manual optimization, or a bad range, or
            ``cache_features=True`` when more than the head trains.
    """
    check_range(min_lr, max_lr, num_steps, diverge_factor)
    if not pl_module.automatic_optimization or len(trainer.optimizers) != 1:
        raise ValueError(
            "The LR range test needs automatic optimization with one optimizer; this module has"
            f" {len(trainer.optimizers)} optimizer(s) and automatic_optimization={pl_module.automatic_optimization}."
        )
    if cache_features not in (None, True, False):
        raise ValueError(f"`cache_features` must be True, False or None (decide), got {cache_features!r}.")
    ramp = _Ramp(trainer.optimizers[0], min_lr, max_lr, num_steps, smoothing, diverge_factor)
    snapshot = _Snapshot(trainer, pl_module)
    loop = trainer.fit_loop
    with ExitStack() as stack:
        features = _HeadOnFeatures(cache_features, stack)
        try:
            with isolate_rng(include_cuda=True):
                freezing = [c for c in callbacks_of(trainer) if isinstance(c, LayerFreezing)]
                for callback in freezing:
                    callback.policy = cast("FreezingPolicy", _FirstPhase(callback.policy))
                trainer.callbacks = [*freezing, features, ramp]  # type: ignore[attr-defined]
                trainer.loggers = []
                trainer.limit_val_batches = 0
                trainer.strategy.lr_scheduler_configs = []
                loop.max_epochs, loop.min_epochs = -1, None
                loop.epoch_loop.max_steps, loop.epoch_loop.min_steps = -1, None
                loop.run()
        finally:
            if features.cache is not None:
                features.cache.clear()
            snapshot.restore()
    ramp.curve.cached_features = features.cache is not None
    return ramp.curve
