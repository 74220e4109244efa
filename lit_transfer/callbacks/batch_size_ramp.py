"""BatchSizeRamp: grow the batch (or gradient accumulation) instead of decaying the learning rate."""

from __future__ import annotations

from typing import Any, Literal, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr
from typing_extensions import override

from lit_transfer.callbacks._ramp_schedule import RampSchedule, ramp_total_steps
from lit_transfer.errors import check_int, is_int, is_number
from lit_transfer.optim.batch_rules import Rule, check_rule, follow_batch, resolve_rule
from lit_transfer.optim.rescale import resize_step_scheduler
from lit_transfer.trainer_facts import (
    global_batch_size,
    loader_batch_size,
    planned_epochs,
    samples_per_rank,
    step_lr_factor,
    train_loader,
)

__all__ = ["BatchSizeRamp", "ramp_total_steps"]


class BatchSizeRamp(Callback):
    r"""Increase the batch size during training, as a replacement for learning-rate decay.

    Smith et al. 2018, "Don't Decay the Learning Rate, Increase the Batch Size": SGD's noise scale is
    :math:`g \approx \epsilon N / B` (Smith & Le 2017; :math:`\epsilon` the LR, :math:`N` the training set size,
    :math:`B` the global batch), so multiplying :math:`B` by :math:`k` anneals like dividing :math:`\epsilon` by
    :math:`k`, with :math:`k` times fewer optimizer steps. The noise scale is logged every epoch.

    The batch for epoch :math:`e+1` is set in ``on_train_epoch_end`` of epoch :math:`e`, because Lightning rebuilds
    the train DataLoader *before* ``on_train_epoch_start`` (hence ``reload_dataloaders_every_n_epochs=1``). In
    ``"accumulate"`` mode ``trainer.accumulate_grad_batches`` grows instead; ``"auto"`` grows the real batch up to
    ``max_batch_size``, then accumulation. Under DDP every rank follows the same schedule.

    Step-interval OneCycleLR and CosineAnnealingLR are resized to the ramp's true number of optimizer steps in
    ``on_fit_start`` (``trainer.estimated_stepping_batches`` assumes the first epoch's batch for all epochs);
    :meth:`total_optimizer_steps` and :func:`ramp_total_steps` give that number for your own schedulers.

    Args:
        milestones: ``{epoch: factor}`` relative to the initial batch, e.g. ``{0: 1, 10: 2, 20: 4}``.
        every_n_epochs: Alternatively, multiply the batch by ``factor`` every ``every_n_epochs`` epochs.
        factor: The multiplier used with ``every_n_epochs``.
        max_batch_size: Largest per-device batch (``"batch"`` caps there; ``"auto"`` accumulates beyond it).
        mode: ``"batch"``, ``"accumulate"`` or ``"auto"``.
        batch_size_attr: Attribute of the DataModule or LightningModule holding the per-device batch size (found
            like Lightning's ``BatchSizeFinder`` does).
        lr_coupling: ``"hold"`` keeps the LR (the paper); ``"scale"`` rescales it with the global batch by
            ``rule`` at each change, through every scheduler's base values (the same rule and code as
            :class:`~lit_transfer.callbacks.LRScaling`, see :mod:`lit_transfer.optim.batch_rules`).
        rule: The LR scaling rule of ``lr_coupling="scale"``, as LRScaling's ``rule``: ``"linear"`` or ``"sqrt"``;
            ``None`` picks sqrt for Adam-family optimizers, else linear.

    Example::

        Trainer(reload_dataloaders_every_n_epochs=1, callbacks=[BatchSizeRamp(milestones={0: 1, 30: 2, 60: 4})])
    """

    def __init__(
        self,
        milestones: dict[int, float] | None = None,
        every_n_epochs: int | None = None,
        factor: float = 2.0,
        max_batch_size: int | None = None,
        mode: Literal["batch", "accumulate", "auto"] = "batch",
        batch_size_attr: str = "batch_size",
        lr_coupling: Literal["hold", "scale"] = "hold",
        rule: Rule | None = None,
    ) -> None:
        if (milestones is None) == (every_n_epochs is None):
            raise ValueError(
                f"Set exactly one of `milestones` ({milestones!r}) or `every_n_epochs` ({every_n_epochs!r})."
            )
        if milestones is not None:
            if not milestones:
                raise ValueError(f"`milestones` must not be empty, got {milestones!r}.")
            for epoch, value in milestones.items():
                if not is_int(epoch) or epoch < 0 or not is_number(value) or value <= 0:
                    raise ValueError(f"`milestones` needs epoch >= 0 and factor > 0, got {epoch!r}: {value!r}.")
        else:
            check_int("every_n_epochs", every_n_epochs, minimum=1, expected="a positive int")
            if not is_number(factor) or factor <= 0:
                raise ValueError(f"`factor` must be > 0, got {factor!r}.")
        if max_batch_size is not None:
            check_int("max_batch_size", max_batch_size, minimum=1, expected="a positive int")
        for name, choice, allowed in [
            ("mode", mode, ("batch", "accumulate", "auto")),
            ("lr_coupling", lr_coupling, ("hold", "scale")),
        ]:
            if choice not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {choice!r}.")
        check_rule(rule, "rule")
        if mode == "auto" and max_batch_size is None:
            raise ValueError("`mode='auto'` grows the batch up to `max_batch_size`; set `max_batch_size`.")
        self.schedule = RampSchedule(
            tuple(sorted((int(k), float(v)) for k, v in milestones.items())) if milestones else None,
            every_n_epochs,
            float(factor),
            max_batch_size,
            mode,
        )
        self.mode, self.batch_size_attr = mode, batch_size_attr
        self.lr_coupling, self.rule = lr_coupling, rule
        self._reset_state()

    def _reset_state(self) -> None:
        self.initial_batch_size: int | None = None
        self.initial_accumulation: int | None = None
        self.batch_size: int | None = None
        self.accumulate_grad_batches: int | None = None
        self.epoch: int = 0  # the epoch `batch_size`/`accumulate_grad_batches` are for
        self._mid_epoch = False
        self._restored = False

    # --------------------------------------------------------------------------------------------- queries
    def sizes_at(self, epoch: int) -> tuple[int, int]:
        """``(per-device batch, accumulate_grad_batches)`` for ``epoch``."""
        assert self.initial_batch_size is not None and self.initial_accumulation is not None
        return self.schedule.sizes_at(epoch, self.initial_batch_size, self.initial_accumulation)

    def initial_global_batch(self, trainer: pl.Trainer) -> int:
        """The global batch of epoch 0: initial per-device batch x world size x initial accumulation."""
        assert self.initial_batch_size is not None and self.initial_accumulation is not None
        return global_batch_size(trainer, self.initial_batch_size, self.initial_accumulation)

    def total_optimizer_steps(self, trainer: pl.Trainer) -> int:
        """The true number of optimizer steps of the whole fit under this ramp (``max_steps`` respected)."""
        if train_loader(trainer) is None:
            trainer.fit_loop.setup_data()
        samples = samples_per_rank(trainer)
        if samples is None:
            raise ValueError(
                "BatchSizeRamp cannot count the optimizer steps of a train DataLoader without a length (an iterable"
                " dataset): use interval='epoch' schedulers, or a map-style dataset."
            )
        loader = train_loader(trainer)
        drop_last = bool(getattr(loader, "drop_last", False))
        epochs = planned_epochs(trainer)
        if epochs is not None:
            steps = ramp_total_steps(
                samples, [self.sizes_at(e) for e in range(epochs)], drop_last, trainer.limit_train_batches
            )
            return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps
        if trainer.max_steps == -1:
            raise ValueError(
                "BatchSizeRamp cannot size a step-interval scheduler for a fit bounded by neither `max_epochs` nor"
                " `max_steps`: set one of them, or use interval='epoch' schedulers."
            )
        return int(trainer.max_steps)  # epochs run on, whatever their batch size, until `max_steps`

    # ---------------------------------------------------------------------------------------------- checks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset_state()
        if not lightning_hasattr(pl_module, self.batch_size_attr):
            raise AttributeError(
                f"BatchSizeRamp could not find `{self.batch_size_attr}` on the LightningModule, its hparams or its"
                f" DataModule. Either add that attribute (read by `train_dataloader`) or pass `batch_size_attr=`."
            )
        # `Trainer.reload_dataloaders_every_n_epochs` is assigned by Lightning's data connector, not declared
        if self.mode != "accumulate" and trainer.reload_dataloaders_every_n_epochs != 1:  # type: ignore[attr-defined]
            raise ValueError(
                "BatchSizeRamp changes the batch size between epochs, so the train DataLoader must be rebuilt every"
                f" epoch: either remove BatchSizeRamp or set `Trainer(reload_dataloaders_every_n_epochs=1)`"
                f" (got {trainer.reload_dataloaders_every_n_epochs})."  # type: ignore[attr-defined]
            )
        if self.mode != "batch" and not pl_module.automatic_optimization:
            raise ValueError(
                f"BatchSizeRamp(mode={self.mode!r}) sets `trainer.accumulate_grad_batches`, which manual optimization"
                " ignores: either use mode='batch' or automatic optimization."
            )
        last = max(k for k, _ in self.schedule.milestones) if self.schedule.milestones else None
        if last is not None and trainer.max_epochs not in (None, -1) and last >= trainer.max_epochs:
            raise ValueError(
                f"BatchSizeRamp milestone {last} is past the last epoch (`max_epochs={trainer.max_epochs}`): either"
                " remove that milestone or raise `max_epochs`."
            )
        # `lightning_getattr` is annotated `Optional[Any]`; a `None` value still fails in `int()` as before
        self.initial_batch_size = int(cast(Any, lightning_getattr(pl_module, self.batch_size_attr)))
        self.initial_accumulation = trainer.accumulate_grad_batches
        self.sizes_at(max(planned_epochs(trainer) or 1, 1) - 1)  # whole-number checks for the whole run

    # ----------------------------------------------------------------------------------------------- apply
    def _apply(self, trainer: pl.Trainer, epoch: int) -> tuple[int, int]:
        batch, accumulation = self.sizes_at(epoch)
        lightning_setattr(trainer.lightning_module, self.batch_size_attr, batch)
        trainer.accumulate_grad_batches = accumulation
        self.batch_size, self.accumulate_grad_batches, self.epoch = batch, accumulation, epoch
        return batch, accumulation

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after `load_state_dict` and before the first train loader of a resumed fit is built
        self._apply(trainer, self.epoch if self._restored else 0)
        self._resize_step_schedulers(trainer)

    def _resize_step_schedulers(self, trainer: pl.Trainer) -> None:
        if self._restored or not trainer.lr_scheduler_configs:
            return  # a resumed scheduler's state already holds the resized horizon
        total: int | None = None
        for cfg in trainer.lr_scheduler_configs:
            if cfg.interval != "step":
                continue
            total = self.total_optimizer_steps(trainer) if total is None else total
            if resize_step_scheduler(cfg.scheduler, total):
                rank_zero_info(f"BatchSizeRamp: {type(cfg.scheduler).__name__} resized to {total} optimizer steps.")
            else:
                rank_zero_warn(
                    f"BatchSizeRamp cannot resize the step-interval {type(cfg.scheduler).__name__}; the ramp takes"
                    f" {total} optimizer steps, not `trainer.estimated_stepping_batches`. Size it with"
                    " `BatchSizeRamp.total_optimizer_steps(trainer)` or use interval='epoch'."
                )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = samples_per_rank(trainer)
        if samples is None:
            return
        epochs = range(trainer.current_epoch, max(planned_epochs(trainer) or trainer.current_epoch + 1, 1))
        largest = max(self.sizes_at(e)[0] for e in epochs)
        if largest > samples:
            raise ValueError(
                f"BatchSizeRamp would grow the per-device batch to {largest}, beyond the {samples} training samples"
                " per device: lower the factors, set `max_batch_size`, or use mode='accumulate'."
            )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mid_epoch = True
        epoch = trainer.current_epoch
        expected = self.sizes_at(epoch)
        loader = train_loader(trainer)
        actual = loader_batch_size(loader)
        if actual is not None and actual != expected[0]:
            rank_zero_warn(
                f"BatchSizeRamp: epoch {epoch} runs at batch {actual}, the ramp says {expected[0]}. This happens when"
                " resuming from a checkpoint written before the ramp's `on_train_epoch_end` (e.g. at validation end)."
            )
        batch, accumulation = actual or expected[0], trainer.accumulate_grad_batches
        global_batch = global_batch_size(trainer, batch, accumulation)
        dataset = getattr(loader, "dataset", None)
        pl_module.log("batch_size_ramp/batch_size", float(batch), on_step=False, on_epoch=True, sync_dist=True)
        pl_module.log(
            "batch_size_ramp/accumulate_grad_batches", float(accumulation), on_step=False, on_epoch=True, sync_dist=True
        )
        pl_module.log("batch_size_ramp/global_batch", float(global_batch), on_step=False, on_epoch=True, sync_dist=True)
        if dataset is not None and hasattr(dataset, "__len__") and trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"]) * step_lr_factor(trainer)  # warmup included
            pl_module.log(
                "batch_size_ramp/noise_scale", lr * len(dataset) / global_batch, on_epoch=True, sync_dist=True
            )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mid_epoch = False
        old_global = global_batch_size(trainer, self.batch_size, self.accumulate_grad_batches)
        batch, accumulation = self._apply(trainer, trainer.current_epoch + 1)
        new_global = global_batch_size(trainer, batch, accumulation)
        if new_global == old_global:
            return
        rank_zero_info(
            f"BatchSizeRamp: epoch {trainer.current_epoch + 1} uses per-device batch {batch}, accumulation"
            f" {accumulation} (global {new_global})."
        )
        if self.lr_coupling == "scale":
            follow_batch(trainer, resolve_rule(self.rule, trainer.optimizers[0]), old_global, new_global)

    # ----------------------------------------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_batch_size": self.initial_batch_size,
            "initial_accumulation": self.initial_accumulation,
            "batch_size": self.batch_size,
            "accumulate_grad_batches": self.accumulate_grad_batches,
            "epoch": self.epoch,
            "mid_epoch": self._mid_epoch,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_batch_size = state_dict["initial_batch_size"]
        self.initial_accumulation = state_dict["initial_accumulation"]
        self.batch_size = state_dict["batch_size"]
        self.accumulate_grad_batches = state_dict["accumulate_grad_batches"]
        self.epoch = state_dict["epoch"]
        self._restored = True
        if state_dict.get("mid_epoch"):
            rank_zero_warn(
                f"BatchSizeRamp: resuming from a mid-epoch checkpoint (epoch {self.epoch}); the batch size is restored"
                " but the run is exact only from checkpoints written at epoch ends."
            )
