"""The decision of :class:`~lit_transfer.freezing.AutoFreeze` on a live run, and the application of its plan.

:class:`~lit_transfer.callbacks.LayerFreezing` calls :func:`plan_auto_freeze` at the start of the first epoch
after the linear probe. On rank 0 it runs the policy's candidates as short trial fine-tunes on the run's module
(:class:`~lit_transfer.freezing.sandbox.TrialBench`, which restores the weights, gradients, flags, modes and random
generators afterwards), scores them on validation samples (:mod:`lit_transfer.freezing.trial_data`) by successive
halving (:func:`~lit_transfer.freezing.trials.successive_halving`), and the policy turns the scores into a plan.
Without enough validation data, when the trials cannot run (several optimizers), or when they would cost more than
the policy's share of the run's steps left, the policy's stated default is the plan and the log line says why. The
plan is broadcast so that every DDP rank follows the same one.
:func:`apply_lr_multipliers` then multiplies the plan's per-group factors into the optimizer's param groups and
every copy the LR schedulers keep (with :func:`lit_transfer.optim.rescale.scale_learning_rates`, as the batch-size
LR scaling does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_transfer.freezing.auto import AutoFreeze, AutoFreezePlan
from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.freezing.sandbox import TrialBench
from lit_transfer.freezing.trial_data import samples_per_class, validation_set
from lit_transfer.freezing.trials import successive_halving
from lit_transfer.optim.rescale import scale_learning_rates, scheduler_configs_of
from lit_transfer.training_state import seeded_rng

__all__ = ["apply_lr_multipliers", "decide", "plan_auto_freeze", "steps_left"]


def decide(
    trainer: Trainer, pl_module: LightningModule, groups: Sequence[LayerGroup], policy: AutoFreeze
) -> AutoFreezePlan:
    """Run the policy's trials on this process and return its plan (kept in ``policy.plan``)."""
    names = [g.name for g in groups]
    per_class = samples_per_class(trainer, pl_module)
    epoch = trainer.current_epoch
    val = validation_set(trainer, policy.max_val_samples, policy.seed)
    if val is None:
        return policy.fallback(names, per_class, epoch, "no validation data to compare candidates on")
    if val.size < policy.min_val_samples:
        return policy.fallback(
            names,
            per_class,
            epoch,
            f"{val.size} validation samples, fewer than min_val_samples={policy.min_val_samples} to tell candidates"
            " apart",
        )
    if len(trainer.optimizers) != 1:
        return policy.fallback(
            names, per_class, epoch, f"the trials follow one optimizer, the run has {len(trainer.optimizers)}"
        )
    batches = trainer.num_training_batches
    candidates = policy.candidates(names)
    steps = policy.affordable_steps(
        int(batches) if isinstance(batches, int) or math.isfinite(batches) else None,
        steps_left(trainer),
        len(candidates),
    )
    if isinstance(steps, str):
        return policy.fallback(names, per_class, epoch, steps)
    with seeded_rng(policy.seed):
        bench = TrialBench(trainer, pl_module, groups, val, policy.seed, policy.train_bn)
        try:
            results = successive_halving(candidates, bench.run, steps, policy.halving)
        finally:
            bench.close()
    return policy.choose(names, results, per_class, epoch, val.size)


def steps_left(trainer: Trainer) -> int | None:
    """Training batches left in the run (``None`` when its length is unknown, e.g. ``max_epochs=-1``)."""
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total):
        return None
    return max(0, int(total) - trainer.global_step) * trainer.accumulate_grad_batches


def plan_auto_freeze(
    trainer: Trainer, pl_module: LightningModule, groups: Sequence[LayerGroup], policy: AutoFreeze
) -> AutoFreezePlan:
    """Decide on rank 0, broadcast: every rank gets (and keeps in ``policy.plan``) the same plan."""
    state: dict[str, Any] | None = None
    if trainer.is_global_zero:
        state = decide(trainer, pl_module, groups, policy).to_dict()
    state = trainer.strategy.broadcast(state, src=0)
    assert state is not None
    policy.load_state_dict({"plan": state})
    assert policy.plan is not None
    rank_zero_info(policy.plan.describe([g.name for g in groups]))
    return policy.plan


def apply_lr_multipliers(trainer: Trainer, groups: Sequence[LayerGroup], multipliers: Sequence[float]) -> bool:
    """Multiply each layer group's learning rates (optimizer and LR schedulers) by its multiplier.

    Every optimizer param group must lie inside one layer group (as the package's models build them: one or two
    param groups per layer group); one that mixes groups of different multipliers cannot follow them, so that
    optimizer is left unscaled with a warning.

    Returns:
        Whether every optimizer was scaled.
    """
    owner = {id(p): index for index, group in enumerate(groups) for p in group.params}
    scaled_all = True
    for optimizer in trainer.optimizers:
        factors: list[float] = []
        for param_group in optimizer.param_groups:
            found = {float(multipliers[owner[id(p)]]) for p in param_group["params"] if id(p) in owner}
            if len(found) > 1:
                break
            factors.append(found.pop() if found else 1.0)
        else:
            if any(f != 1.0 for f in factors):
                configs = scheduler_configs_of(trainer, optimizer)
                scale_learning_rates(optimizer, [cfg.scheduler for cfg in configs], factors)
            continue
        scaled_all = False
        rank_zero_warn(
            f"AutoFreeze: a param group of {type(optimizer).__name__} holds parameters of several layer groups, so its"
            " per-group learning-rate multipliers are not applied (only which groups train is). Build the optimizer"
            " with one param group per layer group (as TransferClassifier does) to get them."
        )
    return scaled_all
