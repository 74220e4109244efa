"""Named optimizer parameter groups with layer-wise LR decay.

One optimizer holds every layer group from the first step, frozen groups included: freezing only toggles
``requires_grad`` (torch optimizers skip parameters whose ``.grad`` is ``None``), so schedulers see a fixed set
of groups and checkpoints have the same layout in every phase. Layer-wise decay is multiplied into each
group's ``lr`` here, because torch and Lightning schedulers ignore timm's ``lr_scale`` key.

A scheduler that sets one absolute LR for every group (``OneCycleLR(max_lr=1e-3)``, the natural YAML form) would
drop those per-group ratios; :func:`keep_group_lr_ratios`, called right after the scheduler is built, restores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from lit_transfer.freezing.layer_groups import LayerGroup
from lit_transfer.optim.rescale import iter_schedulers, scale_learning_rates

__all__ = [
    "apply_lr_scales",
    "build_param_groups",
    "keep_group_lr_ratios",
    "layer_decay_scales",
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
        groups: Layer groups from :func:`lit_transfer.freezing.layer_groups.layer_groups`.
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
