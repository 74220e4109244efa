"""LRScaling: scale every learning rate with the true global batch size, with gradual warmup."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer
from typing_extensions import override

from lit_transfer.errors import check_int, check_positive_int
from lit_transfer.optim.batch_rules import Rule, check_rule, follow_batch, resolve_rule, scale_factor
from lit_transfer.trainer_facts import (
    GlobalBatch,
    batch_schedule,
    global_batch,
    optimizer_steps_per_epoch,
    samples_per_epoch,
)


class LRScaling(Callback):
    r"""Scale the learning rate of every param group with the global batch size, then warm it up.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour": when the minibatch is
    multiplied by :math:`k`, multiply the learning rate by :math:`k`,

    .. math:: \eta = \eta_\text{base} \cdot \frac{B}{B_\text{base}} \quad \text{(linear)}, \qquad
              \eta = \eta_\text{base} \cdot \sqrt{B / B_\text{base}} \quad \text{(sqrt, for adaptive optimizers)},

    and ramp it up from :math:`\eta_\text{base}` over the first steps ("gradual warmup"): at optimizer step
    :math:`t < T` the LR is :math:`\eta_t \cdot (s + (1 - s)\, t / T)` with start factor :math:`s = 1/k`
    (the unscaled LR) unless ``warmup_start_factor`` is given.

    The global batch :math:`B` = per-device batch x devices x nodes x ``accumulate_grad_batches`` is read from the
    Trainer and its train DataLoader. The scale is written into every copy of each group's LR (``lr``,
    ``initial_lr``, the schedulers' ``base_lrs``, OneCycleLR's ``max_lr``/``min_lr``, ReduceLROnPlateau's
    ``min_lrs``, every child of SequentialLR/ChainedScheduler) once, in ``on_train_start`` (after Lightning
    restored the optimizer), so any torch scheduler keeps its shape, multiplied by the scale, and per-group
    ratios (layer decay) are kept. A resumed run does not re-apply the scale; if the global batch changed
    (other ``devices``, nodes or accumulation), the LRs are rescaled by the ratio of the new to the old scale.
    Warmup multiplies the optimizer's LR only for the duration of ``optimizer.step`` (optimizer step
    pre/post hooks), so schedulers never see the warmed value.

    When an epoch holds fewer training samples than the global batch (85 images, batch 256), no optimizer step
    averages more than the epoch's samples: the scale then uses that *effective* global batch, ``min(global batch,
    samples per epoch)``, records it as ``reference_batch``, and warns at the start of training, naming
    ``batch_size`` and the dataset size, because the batch size was probably meant for a larger dataset.

    Under :class:`~lit_transfer.callbacks.BatchSizeRamp` the scale keys on the ramp's *initial* global batch:
    Smith et al.'s ramp anneals the noise scale precisely because the LR stays fixed while the batch grows.
    ``follow_batch_ramp=True`` rescales with the live batch every epoch instead, which undoes that annealing.

    Args:
        rule: ``"linear"`` or ``"sqrt"``; ``None`` picks ``"sqrt"`` for Adam-family optimizers, else ``"linear"``.
        base_batch_size: The global batch size the configured LRs were tuned for.
        warmup_epochs: Warmup length in epochs (may be fractional); converted to optimizer steps at the start.
        warmup_steps: Warmup length in optimizer steps. At most one of the two may be non-zero.
        warmup_start_factor: Warmup's first multiplier; ``None`` means ``1 / scale`` (start at the unscaled LR).
        follow_batch_ramp: Rescale with the live global batch at every epoch start.
        batch_size_attr: Attribute of the module or DataModule holding the per-device batch size, used when the
            DataLoader does not expose one.

    Example::

        trainer = Trainer(devices=4, accumulate_grad_batches=2, callbacks=[LRScaling(base_batch_size=256)])
    """

    def __init__(
        self,
        rule: Rule | None = None,
        base_batch_size: int = 256,
        warmup_epochs: float = 0,
        warmup_steps: int = 0,
        warmup_start_factor: float | None = None,
        follow_batch_ramp: bool = False,
        batch_size_attr: str = "batch_size",
    ) -> None:
        check_rule(rule, "rule")
        check_positive_int("base_batch_size", base_batch_size)
        if warmup_epochs < 0:
            raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs!r}.")
        check_int("warmup_steps", warmup_steps, minimum=0)
        if warmup_epochs and warmup_steps:
            raise ValueError(
                f"Set either `warmup_epochs` ({warmup_epochs!r}) or `warmup_steps` ({warmup_steps!r}), not both."
            )
        if warmup_start_factor is not None and not 0 < warmup_start_factor <= 1:
            raise ValueError(f"`warmup_start_factor` must be in (0, 1] or None, got {warmup_start_factor!r}.")
        self.rule = rule
        self.base_batch_size = base_batch_size
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_steps = warmup_steps
        self.warmup_start_factor = warmup_start_factor
        self.follow_batch_ramp = follow_batch_ramp
        self.batch_size_attr = batch_size_attr
        # state
        self.applied_scale: float | None = None
        self.applied_rule: str | None = None
        self.reference_batch: int | None = None
        self.warmup_total_steps: int | None = None
        self._hooks: dict[int, tuple[Any, Any]] = {}
        self._saved_lrs: dict[int, list[Any]] = {}
        self._trainer: pl.Trainer | None = None
        self._warned_small_epoch = False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # a fresh fit starts unscaled; a resumed one gets its state back from `load_state_dict` right after
        self.load_state_dict({})
        self._warned_small_epoch = False
        schedule = batch_schedule(trainer)
        if self.follow_batch_ramp and schedule is not None and schedule.lr_coupling == "scale":
            raise ValueError(
                f"{type(schedule).__name__}(lr_coupling='scale') and LRScaling(follow_batch_ramp=True) would both"
                " rescale the LR: either set lr_coupling='hold' or follow_batch_ramp=False."
            )
        # `Trainer.reload_dataloaders_every_n_epochs` is assigned by Lightning's data connector, not declared
        if self.follow_batch_ramp and trainer.reload_dataloaders_every_n_epochs != 1:  # type: ignore[attr-defined]
            rank_zero_info(
                "LRScaling(follow_batch_ramp=True) rescales when the train DataLoader's batch changes; the loader is"
                f" rebuilt every {trainer.reload_dataloaders_every_n_epochs or 'never'} epoch(s)."  # type: ignore[attr-defined]
            )

    # ----------------------------------------------------------------------------------------------- scaling
    def _reference_global_batch(self, trainer: pl.Trainer) -> int:
        schedule = batch_schedule(trainer)
        if schedule is not None and schedule.initial_batch_size is not None and not self.follow_batch_ramp:
            initial = global_batch(trainer, schedule.initial_batch_size, schedule.initial_accumulation)
            return self._effective(trainer, initial)
        return self._effective(trainer, global_batch(trainer, batch_size_attr=self.batch_size_attr))

    def _effective(self, trainer: pl.Trainer, batch: GlobalBatch) -> int:
        """``min(global batch, samples per epoch)``, warning once per fit when the epoch is the smaller."""
        samples = samples_per_epoch(trainer)
        if samples is None or samples <= 0 or samples >= batch.size:
            return batch.size
        if not self._warned_small_epoch:
            self._warned_small_epoch = True
            rank_zero_warn(
                f"LRScaling: the global batch is {batch} but an epoch holds only"
                f" {samples} training samples, so no optimizer step averages more than {samples}: the LR is scaled"
                f" for an effective global batch of {samples} (base {self.base_batch_size}), not {batch.size}."
                f" Set `batch_size` below {samples} (e.g. {max(1, samples // 4)}) so that an epoch has several steps,"
                " or train on more images."
            )
        return samples

    def _rescale_to(self, trainer: pl.Trainer, batch: int, reason: str) -> None:
        assert self.applied_rule is not None
        previous = self.base_batch_size if self.reference_batch is None else self.reference_batch
        follow_batch(trainer, self.applied_rule, previous, batch)
        self.applied_scale = scale_factor(self.applied_rule, batch, self.base_batch_size)
        self.reference_batch = batch
        rank_zero_info(
            f"LRScaling: {reason}; global batch {batch} vs base {self.base_batch_size},"
            f" {self.applied_rule} rule -> LR x{self.applied_scale:.6g} in every param group."
        )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        batch = self._reference_global_batch(trainer)
        if self.applied_scale is None:
            self.applied_rule = resolve_rule(self.rule, trainer.optimizers[0])
            if self.rule is None:
                rank_zero_info(
                    f"LRScaling: rule=None -> {self.applied_rule!r} for {type(trainer.optimizers[0]).__name__}"
                    " (sqrt for Adam-family optimizers, linear otherwise)."
                )
            self.reference_batch = None
            self._rescale_to(trainer, batch, "scaling the configured learning rates")
        elif batch != self.reference_batch:
            self._rescale_to(trainer, batch, f"global batch changed since the checkpoint (was {self.reference_batch})")
        if self.warmup_total_steps is None:
            self.warmup_total_steps = self._warmup_length(trainer)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.follow_batch_ramp and self.applied_scale is not None:
            batch = self._effective(trainer, global_batch(trainer, batch_size_attr=self.batch_size_attr))
            if batch != self.reference_batch:
                self._rescale_to(trainer, batch, f"epoch {trainer.current_epoch} follows the live batch")

    # ------------------------------------------------------------------------------------------------ warmup
    def _warmup_length(self, trainer: pl.Trainer) -> int:
        if self.warmup_steps:
            return self.warmup_steps
        if not self.warmup_epochs:
            return 0
        return max(1, round(self.warmup_epochs * optimizer_steps_per_epoch(trainer)))

    def warmup_factor(self, step: int) -> float:
        """The warmup multiplier before optimizer step ``step`` (0-based); 1 once warmup is over."""
        total = self.warmup_total_steps or 0
        if step >= total:
            return 1.0
        start = self.warmup_start_factor
        if start is None:
            start = min(1.0, 1.0 / self.applied_scale) if self.applied_scale else 1.0
        return start + (1.0 - start) * step / total

    def _pre_step(self, optimizer: Optimizer, *_: Any) -> None:
        if self._trainer is None:
            return
        factor = self.warmup_factor(self._trainer.global_step)
        if factor == 1.0:
            return
        self._saved_lrs[id(optimizer)] = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor

    def _post_step(self, optimizer: Optimizer, *_: Any) -> None:
        saved = self._saved_lrs.pop(id(optimizer), None)
        if saved is not None:
            for group, lr in zip(optimizer.param_groups, saved):
                group["lr"] = lr

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.warmup_total_steps:
            return
        for optimizer in trainer.optimizers:  # (re-)register, e.g. after an optimizer swap
            if id(optimizer) not in self._hooks:
                self._hooks[id(optimizer)] = (
                    optimizer.register_step_pre_hook(self._pre_step),
                    optimizer.register_step_post_hook(self._post_step),
                )
        # Loggers only write step values every `log_every_n_steps` steps: log the factor on those steps alone.
        # (`Trainer.log_every_n_steps` is assigned by Lightning's logger connector, not declared on the class.)
        every: int = trainer.log_every_n_steps  # type: ignore[attr-defined]
        step = trainer.global_step
        if step <= self.warmup_total_steps and (step + 1) % every == 0:
            pl_module.log("lr_scaling/warmup_factor", self.warmup_factor(step), on_step=True)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handles in self._hooks.values():
            for handle in handles:
                handle.remove()
        self._hooks.clear()
        self._trainer = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.applied_scale is not None:
            pl_module.log("lr_scaling/scale", self.applied_scale, on_epoch=True, sync_dist=True)

    # ------------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "applied_scale": self.applied_scale,
            "applied_rule": self.applied_rule,
            "reference_batch": self.reference_batch,
            "warmup_total_steps": self.warmup_total_steps,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.applied_scale = state_dict.get("applied_scale")
        self.applied_rule = state_dict.get("applied_rule")
        self.reference_batch = state_dict.get("reference_batch")
        self.warmup_total_steps = state_dict.get("warmup_total_steps")
