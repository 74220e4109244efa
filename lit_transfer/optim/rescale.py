"""Helpers that change a torch optimizer's learning rates without fighting its LR schedulers.

A torch scheduler keeps its own copy of every group's base LR (``base_lrs``, the ``initial_lr`` group key,
OneCycleLR's ``max_lr``/``min_lr`` keys, ReduceLROnPlateau's ``min_lrs``, CosineAnnealingLR's ``eta_min``).
Writing ``group["lr"]`` alone is undone by closed-form schedulers one step later, so these helpers
update every copy together, in every nested scheduler (SequentialLR, ChainedScheduler).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR

from lit_transfer._compat import PER_GROUP_LR_LISTS, child_schedulers, one_cycle_phases

#: Param-group keys that hold absolute learning rates and scale with ``lr``.
LR_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")
#: Param-group keys a scheduler writes into the groups and reads back later.
SCHEDULER_GROUP_KEYS = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")


def iter_schedulers(scheduler: Any) -> Iterator[Any]:
    """Yield ``scheduler`` and, recursively, the schedulers it wraps (SequentialLR, ChainedScheduler)."""
    yield scheduler
    for child in child_schedulers(scheduler):
        yield from iter_schedulers(child)


def _as_factors(factor: float | Sequence[float], n_groups: int) -> list[float]:
    factors = [float(factor)] * n_groups if isinstance(factor, (int, float)) else [float(f) for f in factor]
    if len(factors) != n_groups:
        raise ValueError(f"Expected {n_groups} per-group factors, got {len(factors)}.")
    return factors


def scale_learning_rates(optimizer: Optimizer, schedulers: Sequence[Any], factor: float | Sequence[float]) -> None:
    """Multiply every learning rate the optimizer and its schedulers hold, per group, by ``factor``.

    After the call the optimizer follows the same schedule with every absolute LR multiplied by the group's
    factor, whether the schedulers are chainable (StepLR, ExponentialLR), closed-form (LambdaLR, OneCycleLR,
    CosineAnnealingLR) or metric-driven (ReduceLROnPlateau).

    Args:
        optimizer: The optimizer whose param groups are scaled.
        schedulers: The schedulers bound to ``optimizer`` (nested ones are found automatically).
        factor: One factor for all groups, or one per param group.
    """
    factors = _as_factors(factor, len(optimizer.param_groups))
    for group, f in zip(optimizer.param_groups, factors):
        for key in LR_GROUP_KEYS:
            if key in group:
                group[key] = group[key] * f
    uniform = len(set(factors)) <= 1
    for top in schedulers:
        for sched in iter_schedulers(top):
            for attr in PER_GROUP_LR_LISTS:
                values = getattr(sched, attr, None)
                if isinstance(values, list) and len(values) == len(factors):
                    setattr(sched, attr, [v * f for v, f in zip(values, factors)])
            if isinstance(sched, (CosineAnnealingLR, CosineAnnealingWarmRestarts)) and sched.eta_min:
                if not uniform:
                    raise ValueError(
                        f"{type(sched).__name__}(eta_min={sched.eta_min}) holds one floor for all param groups and"
                        " cannot be scaled by different per-group factors; use eta_min=0."
                    )
                sched.eta_min = sched.eta_min * factors[0]


def scheduler_configs_of(trainer: Any, optimizer: Optimizer) -> list[Any]:
    """The Lightning ``LRSchedulerConfig`` entries whose scheduler drives ``optimizer``."""
    return [cfg for cfg in trainer.lr_scheduler_configs if cfg.scheduler.optimizer is optimizer]


def scale_trainer_learning_rates(trainer: Any, factor: float) -> None:
    """Scale every optimizer of ``trainer`` and the schedulers bound to it by ``factor``."""
    for optimizer in trainer.optimizers:
        scale_learning_rates(optimizer, [cfg.scheduler for cfg in scheduler_configs_of(trainer, optimizer)], factor)


def rebind_scheduler(scheduler: Any, old: Optimizer, new: Optimizer) -> None:
    """Point ``scheduler`` (and the schedulers it wraps) at ``new``, keeping its position (``last_epoch``).

    The scheduler-owned group keys (``initial_lr``, OneCycleLR's ``max_lr``/``min_lr`` and momentum keys) are
    copied from the old optimizer's groups when the new groups lack them, so the schedule continues where it was.
    Momentum cycling follows the new optimizer (``betas`` for Adam-like, ``momentum`` otherwise) or is switched
    off when the new optimizer has neither.
    """
    if len(old.param_groups) != len(new.param_groups):
        raise ValueError(
            f"Cannot rebind {type(scheduler).__name__}: the new optimizer has {len(new.param_groups)} param groups,"
            f" the old one {len(old.param_groups)}."
        )
    for old_group, new_group in zip(old.param_groups, new.param_groups):
        for key in SCHEDULER_GROUP_KEYS:
            if key in old_group and key not in new_group:
                new_group[key] = old_group[key]
    for sched in iter_schedulers(scheduler):
        sched.optimizer = new
        if getattr(sched, "cycle_momentum", False):
            if "betas" in new.defaults:
                sched.use_beta1 = True
            elif "momentum" in new.defaults:
                sched.use_beta1 = False
            else:
                sched.cycle_momentum = False


def resize_step_scheduler(scheduler: Any, total_steps: int) -> bool:
    """Give a step-interval OneCycleLR or CosineAnnealingLR the true number of optimizer steps.

    Returns:
        ``True`` when the scheduler was resized, ``False`` when its type has no horizon to fix.
    """
    if isinstance(scheduler, OneCycleLR):
        phases = one_cycle_phases(scheduler)
        pct_start = (phases[0]["end_step"] + 1) / scheduler.total_steps
        ends = [*[pct_start * total_steps - 1, 2 * pct_start * total_steps - 2][: len(phases) - 1], total_steps - 1]
        for phase, end in zip(phases, ends):
            phase["end_step"] = float(end)
        scheduler.total_steps = total_steps
        return True
    if isinstance(scheduler, CosineAnnealingLR):
        scheduler.T_max = total_steps
        return True
    return False
