"""The classifier's optimizer and LR schedule: named param groups from its layer groups, the fastest AdamW.

:func:`configure_optimization` builds one optimizer over every layer group (frozen ones included, layer decay and
``frozen_lr_mult`` multiplied into each group's ``lr``) and its schedule: the given scheduler, or the default
linear warmup then cosine decay stepped every optimizer step.

The default optimizer, ``AdamW(lr=1e-3, weight_decay=0.05)``, runs torch's fastest implementation for the
parameters it gets (:func:`fastest_adamw_options`): the fused kernel where torch has one for their device and
dtype (CPU and CUDA for floating-point tensors: several times faster than torch's default per-tensor loop on CPU),
else the multi-tensor ``foreach`` one. Its updates equal the
per-tensor loop's up to float rounding (:data:`ADAMW_TOLERANCE`). Lightning calls ``configure_optimizers`` after
moving the model to its device and precision, so the choice sees the parameters as they train. With ``16-mixed``
precision (a ``GradScaler``) it is ``foreach``: a fused step unscales gradients itself, and Lightning would then
refuse gradient clipping and hand callbacks still-scaled gradients.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lit_transfer.freezing import FreezingPolicy
from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.optim.param_groups import apply_lr_scales, build_param_groups, keep_group_lr_ratios
from lit_transfer.optim.schedules import WarmupCosineLR
from lit_transfer.trainer_facts import optimizer_steps_per_epoch

__all__ = [
    "ADAMW_TOLERANCE",
    "LRSchedulerCallable",
    "OptimizerCallable",
    "configure_optimization",
    "default_optimizer",
    "fastest_adamw_options",
]

OptimizerCallable = Callable[[Iterable[Any]], torch.optim.Optimizer]
LRSchedulerCallable = Callable[[torch.optim.Optimizer], LRScheduler | ReduceLROnPlateau]

ADAMW_TOLERANCE = 1e-6
"""Largest absolute difference allowed between a float32 parameter after 5 AdamW steps of the chosen implementation
and after 5 steps of torch's per-tensor reference (``foreach=False, fused=False``), same gradients, lr 1e-3: float
rounding of the parameter values passes, a wrong update does not (``tests/models/test_optimization.py``)."""


def fastest_adamw_options(params: Iterable[torch.Tensor], grad_scaler: bool = False) -> dict[str, Any]:
    """The AdamW implementation option that runs fastest for ``params``: ``fused``, else ``foreach``, else none.

    An option is chosen when a one-element AdamW step with it runs for every (device, dtype) of ``params`` (probed
    once per pair and process), so the choice follows what the installed torch supports without reading its
    private tables.

    Args:
        params: The parameters the optimizer will hold, on their training device and dtype.
        grad_scaler: Whether a ``GradScaler`` (``16-mixed`` precision) steps the optimizer. A fused optimizer
            unscales inside its step, so Lightning would hand callbacks and gradient clipping still-scaled
            gradients (and refuses clipping): ``foreach`` is used instead.

    Returns:
        ``{"fused": True}``, ``{"foreach": True}`` or ``{}`` (torch's default), keyword arguments for AdamW.

    Example:
        >>> fastest_adamw_options([torch.zeros(3, requires_grad=True)])  # CPU float32: torch has a fused kernel
        {'fused': True}
        >>> fastest_adamw_options([torch.zeros(3, requires_grad=True)], grad_scaler=True)
        {'foreach': True}
    """
    kinds = {(p.device, p.dtype) for p in params}
    if not kinds:
        return {}
    for option in ("fused", "foreach"):
        if option == "fused" and grad_scaler:
            continue
        if all(_adamw_runs(option, device, dtype) for device, dtype in kinds):
            return {option: True}
    return {}


@functools.cache
def _adamw_runs(option: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether one AdamW step with ``{option: True}`` runs on a one-element tensor of ``device`` and ``dtype``."""
    try:
        probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
        probe.grad = torch.zeros_like(probe)
        torch.optim.AdamW([probe], **{option: True}).step()  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False
    return True


def default_optimizer(param_groups: list[dict[str, Any]], grad_scaler: bool = False) -> torch.optim.AdamW:
    """``AdamW(lr=1e-3, weight_decay=0.05)`` over ``param_groups``, with :func:`fastest_adamw_options`.

    Args:
        param_groups: Parameter-group dicts (``params`` plus per-group options).
        grad_scaler: Whether a ``GradScaler`` steps the optimizer (see :func:`fastest_adamw_options`).

    Returns:
        The optimizer.
    """
    params = [p for group in param_groups for p in group["params"]]
    return torch.optim.AdamW(
        param_groups, lr=1e-3, weight_decay=0.05, **fastest_adamw_options(params, grad_scaler=grad_scaler)
    )


def configure_optimization(
    groups: list[LayerGroup],
    backbone: nn.Module,
    policy: FreezingPolicy,
    hparams: Mapping[str, Any],
    trainer: Trainer,
    optimizer: OptimizerCallable | None = None,
    lr_scheduler: LRSchedulerCallable | None = None,
) -> OptimizerLRSchedulerConfig:
    """One optimizer over named layer groups (frozen ones included) and its LR schedule.

    Args:
        groups: The model's layer groups, stem first (the classifier's ``layer_groups``).
        backbone: The timm backbone (its ``no_weight_decay()`` names get no weight decay).
        policy: The freezing policy: groups frozen in epoch 0 get ``frozen_lr_mult``.
        hparams: The classifier's hyper-parameters (``layer_decay``, ``frozen_lr_mult``, ``warmup_epochs``,
            ``scheduler_interval``).
        trainer: The Trainer (sizes the default schedule; tells whether a ``GradScaler`` is in use).
        optimizer: Callable building the optimizer from param groups; ``None`` for :func:`default_optimizer`.
        lr_scheduler: Callable building the scheduler; ``None`` for the default warmup-cosine, stepped every step.

    Returns:
        Lightning's ``{"optimizer": ..., "lr_scheduler": {...}}`` configuration.
    """
    no_wd: set[str] = getattr(backbone, "no_weight_decay", lambda: set())()
    frozen = len(groups) - policy.trainable_depth(0, len(groups))
    param_groups = build_param_groups(
        groups,
        layer_decay=hparams["layer_decay"],
        no_weight_decay_names=no_wd,
        frozen_at_start=frozen,
        frozen_lr_mult=hparams["frozen_lr_mult"],
    )
    if optimizer is None:
        scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        built: torch.optim.Optimizer = default_optimizer(param_groups, grad_scaler=scaler)
    else:
        built = optimizer(param_groups)
    apply_lr_scales(built)
    if lr_scheduler is None:
        total = trainer.estimated_stepping_batches
        if not 1 <= total < math.inf:  # a stream of unknown length without `max_steps`, or an unbounded run
            raise ValueError(
                "The default LR schedule (warmup, then cosine decay to 0) needs the run's length in optimizer steps,"
                " which this run does not have (a train DataLoader without a length, or no `max_epochs`): set"
                " `trainer.max_steps`, use a map-style dataset, or pass your own `lr_scheduler`."
            )
        total = int(total)
        epochs = hparams["warmup_epochs"]
        warmup = min(total, round(epochs * optimizer_steps_per_epoch(trainer))) if epochs else 0
        schedule = WarmupCosineLR(built, total, warmup_steps=warmup)
        return {"optimizer": built, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
    scheduler = keep_group_lr_ratios(lr_scheduler(built))  # a scalar OneCycleLR max_lr keeps the layer decay
    config: LRSchedulerConfigType = {"scheduler": scheduler, "interval": hparams["scheduler_interval"]}
    if isinstance(scheduler, ReduceLROnPlateau):
        config["monitor"] = "val_loss"
    return {"optimizer": built, "lr_scheduler": config}
