"""Named optimizer parameter groups with layer-wise LR decay, and the default LR schedule.

One optimizer holds every layer group from the first step, frozen groups included: freezing only toggles
``requires_grad`` (torch optimizers skip parameters whose ``.grad`` is ``None``), so schedulers see a fixed set
of groups and checkpoints have the same layout in every phase. Layer-wise decay is multiplied into each
group's ``lr`` here, because torch and Lightning schedulers ignore timm's ``lr_scale`` key.

A scheduler that sets one absolute LR for every group (``OneCycleLR(max_lr=1e-3)``, the natural YAML form) would
drop those per-group ratios; :func:`keep_group_lr_ratios`, called right after the scheduler is built, restores them.

The default schedule, :class:`WarmupCosineLR`, is re-planned when a resumed run has another length than the
checkpoint's (e.g. a larger ``max_epochs``), so extra epochs never train at the finished schedule's LR of 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar, cast

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

from lit_transfer._compat import set_scheduler_last_lr
from lit_transfer._schedulers import iter_schedulers, scale_learning_rates
from lit_transfer.layer_groups import LayerGroup

__all__ = [
    "WarmupCosine",
    "WarmupCosineLR",
    "apply_lr_scales",
    "build_param_groups",
    "keep_group_lr_ratios",
    "layer_decay_scales",
    "set_group_lrs",
]

_S = TypeVar("_S")


def layer_decay_scales(num_groups: int, layer_decay: float | None) -> list[float]:
    """LR scale of each group, stem first: ``layer_decay ** (distance from the head)``.

    Args:
        num_groups: Number of layer groups.
        layer_decay: Decay factor in ``(0, 1]``; ``None`` means no decay.

    Returns:
        One scale per group; the head's is 1.

    Example:
        >>> layer_decay_scales(3, 0.5)
        [0.25, 0.5, 1.0]
    """
    if layer_decay is None:
        return [1.0] * num_groups
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1], got {layer_decay!r}.")
    return [layer_decay ** (num_groups - 1 - index) for index in range(num_groups)]


def _no_weight_decay(name: str, param: nn.Parameter, skip: set[str]) -> bool:
    """Timm's rule: biases, norm weights and other 1-d tensors, and names the model lists, get no weight decay."""
    return param.ndim <= 1 or name.endswith(".bias") or name in skip


def build_param_groups(
    groups: list[LayerGroup],
    layer_decay: float | None = None,
    weight_decay: bool = True,
    no_weight_decay_names: Iterable[str] = (),
    frozen_at_start: int = 0,
    frozen_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one (or two) per layer group, in stem-to-head order.

    Each group carries ``name`` (the layer group's name; ``<name>.no_decay`` for its biases and norm weights when
    ``weight_decay`` is on) and ``lr_scale``. :func:`apply_lr_scales` multiplies ``lr_scale`` into the ``lr`` the
    optimizer filled in.

    Args:
        groups: Layer groups from :func:`lit_transfer.layer_groups.layer_groups`.
        layer_decay: Layer-wise LR decay factor in ``(0, 1]`` (``None``: off).
        weight_decay: Split biases, norm weights and ``no_weight_decay_names`` into groups with
            ``weight_decay=0`` (timm's default).
        no_weight_decay_names: Parameter names (as in the groups) that get no weight decay, e.g. a ViT's
            ``pos_embed`` and ``cls_token`` from ``model.no_weight_decay()``.
        frozen_at_start: Number of groups, counted from the stem, that are frozen in the first epoch.
        frozen_lr_mult: Extra LR factor for those groups (used once they are unfrozen, e.g. 0.1 to fine-tune
            the backbone ten times slower than the head).

    Returns:
        Parameter-group dicts ready for any ``torch.optim.Optimizer``.
    """
    if frozen_lr_mult <= 0:
        raise ValueError(f"`frozen_lr_mult` must be positive, got {frozen_lr_mult!r}.")
    scales = layer_decay_scales(len(groups), layer_decay)
    skip = set(no_weight_decay_names)
    param_groups: list[dict[str, Any]] = []
    for index, (group, scale) in enumerate(zip(groups, scales)):
        if index < frozen_at_start:
            scale *= frozen_lr_mult
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in zip(group.param_names, group.params):
            (no_decay if weight_decay and _no_weight_decay(name, param, skip) else decay).append(param)
        if decay:
            param_groups.append({"name": group.name, "params": decay, "lr_scale": scale})
        if no_decay:
            param_groups.append(
                {"name": f"{group.name}.no_decay", "params": no_decay, "lr_scale": scale, "weight_decay": 0.0}
            )
    return param_groups


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's ``lr_scale`` into its ``lr`` (once, right after the optimizer is built).

    torch and Lightning schedulers ignore timm's ``lr_scale`` key; after this call every scheduler built on the
    optimizer starts from the decayed per-group LRs.

    Example:
        >>> opt = torch.optim.SGD([{"params": [torch.zeros(1)], "lr_scale": 0.5}, {"params": [torch.ones(1)]}], lr=0.1)
        >>> apply_lr_scales(opt)
        >>> [group["lr"] for group in opt.param_groups]
        [0.05, 0.1]
    """
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


def set_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Deprecated name of :func:`apply_lr_scales`."""
    warnings.warn(
        "lit_transfer.optim.set_group_lrs is deprecated: call apply_lr_scales (the same function, a name that says"
        " it applies each group's `lr_scale`).",
        DeprecationWarning,
        stacklevel=2,
    )
    apply_lr_scales(optimizer)


def keep_group_lr_ratios(scheduler: _S) -> _S:
    """Give each param group its ``lr_scale`` share of a OneCycleLR's single ``max_lr``; return ``scheduler``.

    ``OneCycleLR(optimizer, max_lr=1e-3)`` with a scalar ``max_lr`` (the natural YAML form) sets every group's peak to
    ``1e-3`` and overwrites each group's ``lr``, so the layer decay :func:`apply_lr_scales` put into the LRs is
    silently dropped. After this call group ``g`` follows the same one-cycle curve scaled by its ``lr_scale``: its
    ``max_lr`` is ``max_lr * lr_scale_g`` (the head, ``lr_scale`` 1, keeps ``max_lr``), and its start and final LRs
    follow (``div_factor``, ``final_div_factor`` unchanged). Call it right after the scheduler is built, before the
    first step; a resumed run then restores the scaled values from the checkpoint.

    Nothing changes for other schedulers (they scale each group's own LR), for a OneCycleLR given one ``max_lr`` per
    group (the peaks already differ), or when every group has the same ``lr_scale``.

    Raises:
        ValueError: For a OneCycleLR with one ``max_lr`` for groups of different ``lr_scale`` inside a
            ``SequentialLR`` or ``ChainedScheduler``, whose siblings share the groups' LRs: pass ``max_lr`` there as a
            list, one per group.

    Example:
        >>> params = [{"params": [torch.zeros(1)], "lr_scale": 0.25}, {"params": [torch.ones(1)], "lr_scale": 1.0}]
        >>> opt = torch.optim.SGD(params, lr=0.1)
        >>> sched = keep_group_lr_ratios(OneCycleLR(opt, max_lr=1e-3, total_steps=10))
        >>> [group["max_lr"] for group in opt.param_groups]
        [0.00025, 0.001]
    """
    for sched in iter_schedulers(scheduler):
        if not isinstance(sched, OneCycleLR):
            continue
        optimizer = sched.optimizer
        groups = optimizer.param_groups
        scales = [float(group.get("lr_scale", 1.0)) for group in groups]
        if len(set(scales)) <= 1 or len({group["max_lr"] for group in groups}) > 1:
            continue
        if sched is not scheduler:
            raise ValueError(
                f"A OneCycleLR inside {type(scheduler).__name__} got one `max_lr` ({groups[0]['max_lr']!r}) for param"
                f" groups whose `lr_scale` differ ({scales}), which drops the layer decay; its sibling schedulers share"
                " the groups' LRs, so it cannot be rescaled afterwards. Pass `max_lr` as a list, one per param group:"
                f" `max_lr=[{groups[0]['max_lr']!r} * g.get('lr_scale', 1.0) for g in optimizer.param_groups]`."
            )
        scale_learning_rates(optimizer, [sched], scales)
    return scheduler


class WarmupCosine:
    """LR factor for ``LambdaLR``: linear warmup, then cosine decay to ``min_factor``.

    A plain object (not a lambda) so ``LambdaLR.state_dict()`` stores it and a resume restores it exactly.

    Args:
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Steps of linear warmup from ``warmup_start`` to 1.
        min_factor: Final factor at the end of the cosine.
        warmup_start: Factor at step 0.

    Example:
        >>> schedule = WarmupCosine(total_steps=10, warmup_steps=2)
        >>> [round(schedule(s), 3) for s in (0, 1, 2, 10)]
        [0.01, 0.505, 1.0, 0.0]
    """

    def __init__(
        self, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0, warmup_start: float = 0.01
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be positive, got {total_steps!r}.")
        self.total_steps = int(total_steps)
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.min_factor = float(min_factor)
        self.warmup_start = float(warmup_start)

    def __call__(self, step: int) -> float:
        """Factor of the base LR at optimizer step ``step``."""
        if step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """``LambdaLR`` over :class:`WarmupCosine`, stepped every optimizer step, that a longer resume re-plans.

    A plain ``LambdaLR`` restores the checkpoint's :class:`WarmupCosine` (its ``__dict__`` is in the scheduler's
    state), sized for the *old* run: resuming with a larger ``max_epochs`` would train every extra step at the
    finished schedule's factor ``min_factor`` (LR 0 by default), silently.

    This class keeps the plan of the run that loads the state. When the restored plan (``total_steps``,
    ``warmup_steps``, ``min_factor``, ``warmup_start``) differs from the one this run was built with, after
    :meth:`load_state_dict`:

    - the steps already done are kept: the scheduler continues at step ``k``, the checkpoint's ``last_epoch``;
    - from there the factor follows this run's plan, as if the run had been configured with its new length from the
      start: the factor of step ``s >= k`` is ``WarmupCosine(new_total, new_warmup)(s)``, reaching ``min_factor``
      at ``new_total``;
    - every param group's ``lr`` is set to ``base_lr`` times the factor of step ``k`` at once, so the first resumed
      step already uses it;
    - a warning names both plans and the LR factor before and after (the LR jumps when the old plan had decayed
      further, e.g. from 0 at the end of a finished 2-epoch run to 0.5 at the midpoint of a 4-epoch one).

    With an unchanged plan (a resume with the same ``max_epochs`` and data) nothing changes: the run is bit-exact with
    an uninterrupted one. The state dict is ``LambdaLR``'s, so checkpoints of either class load into the other.

    Args:
        optimizer: The optimizer (its groups' ``lr`` are the base LRs).
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Steps of linear warmup.
        min_factor: Final factor at the end of the cosine.
        warmup_start: Factor at step 0.
        last_epoch: ``LambdaLR``'s ``last_epoch``.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> old = WarmupCosineLR(opt, total_steps=4)
        >>> for _ in range(4):
        ...     opt.step(); old.step()
        >>> opt.param_groups[0]["lr"]  # the 4-step plan has ended
        0.0
        >>> longer = WarmupCosineLR(opt, total_steps=8)  # a resume planned for 8 steps
        >>> longer.load_state_dict(old.state_dict())  # warns: re-planned
        >>> round(opt.param_groups[0]["lr"], 3)  # step 4 of the 8-step plan
        0.5
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
        warmup_start: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        # No attribute of its own: `LambdaLR.state_dict()` saves every attribute but the optimizer and the lambdas.
        super().__init__(optimizer, WarmupCosine(total_steps, warmup_steps, min_factor, warmup_start), last_epoch)

    @property
    def schedule(self) -> WarmupCosine:
        """The factor function of every param group."""
        return cast("WarmupCosine", self.lr_lambdas[0])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position (and base LRs) of a checkpoint; re-plan when the checkpoint's length differs.

        Args:
            state_dict: ``state_dict()`` of a :class:`WarmupCosineLR` or of a ``LambdaLR`` over :class:`WarmupCosine`.
        """
        planned = dict(vars(self.schedule))
        super().load_state_dict(state_dict)
        restored = dict(vars(self.schedule))
        if restored == planned:
            return
        step = self.last_epoch
        old_factor = self.schedule(step)
        for fn in {id(fn): fn for fn in self.lr_lambdas}.values():  # one object shared by every group
            vars(fn).update(planned)
        new_factor = self.schedule(step)
        lrs = [base * new_factor for base in self.base_lrs]
        set_scheduler_last_lr(self, lrs)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        rank_zero_warn(
            f"The checkpoint's LR schedule was planned for {restored.get('total_steps')} optimizer steps"
            f" ({restored.get('warmup_steps')} of warmup), this run for {planned['total_steps']}"
            f" ({planned['warmup_steps']} of warmup): resuming at step {step}, the warmup-cosine schedule follows this"
            f" run's plan as if it had been configured from the start, so the LR factor at step {step} is"
            f" {new_factor:.4g} instead of the checkpoint plan's {old_factor:.4g}. To continue the old plan instead,"
            " resume with the checkpoint's `max_epochs`/`max_steps` (and the same data and batch size)."
        )
