"""Named optimizer parameter groups with layer-wise LR decay, and the default LR schedule.

One optimizer holds every layer group from the first step, frozen groups included: freezing only toggles
``requires_grad`` (torch optimizers skip parameters whose ``.grad`` is ``None``), so schedulers see a fixed set
of groups and checkpoints have the same layout in every phase. Layer-wise decay is multiplied into each
group's ``lr`` here, because torch and Lightning schedulers ignore timm's ``lr_scale`` key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from lit_transfer.layer_groups import LayerGroup

__all__ = ["WarmupCosine", "build_param_groups", "layer_decay_scales", "set_group_lrs"]


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
    ``weight_decay`` is on) and ``lr_scale``. :func:`set_group_lrs` multiplies ``lr_scale`` into the ``lr`` the
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


def set_group_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's ``lr_scale`` into its ``lr`` (once, right after the optimizer is built)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


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


OptimizerCallable = Callable[[Iterable[Any]], torch.optim.Optimizer]
