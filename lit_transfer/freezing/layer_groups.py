"""Ordered layer groups of a backbone, from timm's own ``group_matcher``.

A layer group is a named set of parameters that is frozen, unfrozen and learning-rate-scaled as a unit. For a
timm model the groups are exactly timm's coarse groups (stem, one per stage or block, head); a timm family without
coarse groups (RDNet) uses timm's fine ones, and a module without ``group_matcher`` (any non-timm module, and a few
timm families: PiT, MetaFormer, CSATv2) falls back to its top-level children. Groups are ordered from the input
(stem) to the output (head), partition the module's parameters exactly once, and keep the parameter order of
``named_parameters()``.

One computation is the source of truth: a LightningModule that defines ``layer_groups`` (as
:class:`~lit_transfer.TransferClassifier` does, building its optimizer's param groups from them) is read through
:func:`module_layer_groups`, so the freezing callback and the feature cache use the very groups the optimizer was
built from. :func:`parameters_missing_from` checks that an optimizer holds every grouped parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from lightning.pytorch.utilities import rank_zero_info
from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "LayerGroup",
    "check_optimizers_hold_every_parameter",
    "layer_groups",
    "layout_fingerprint",
    "module_layer_groups",
    "parameters_missing_from",
    "set_trainable",
]


@dataclass(frozen=True)
class LayerGroup:
    """A named, ordered set of parameters.

    Attributes:
        name: Unique, human-readable name (``stem``, ``layer3``, ``blocks.5+norm``, ``head``).
        param_names: Names of the parameters in this group, relative to the grouped module.
        params: The parameter tensors themselves, in the same order.
    """

    name: str
    param_names: tuple[str, ...]
    params: tuple[nn.Parameter, ...] = field(repr=False, compare=False)

    @property
    def numel(self) -> int:
        """Number of scalar parameters in the group."""
        return sum(p.numel() for p in self.params)


_INDEXED_ROOT = re.compile(r"^([A-Za-z_]+)\.(\d+)\.")


def _root(param_name: str) -> str:
    """The module a parameter belongs to, at stage granularity (``layer1``, ``blocks.5``, ``stages.0``)."""
    match = _INDEXED_ROOT.match(param_name)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    return param_name.split(".", 1)[0]


def _name_groups(raw: list[list[str]], last_is_head: bool) -> list[str]:
    names: list[str] = []
    for index, param_names in enumerate(raw):
        if index == 0 and len(raw) > 1:
            name = "stem"
        elif index == len(raw) - 1 and last_is_head:
            name = "head"
        else:
            roots = list(dict.fromkeys(_root(n) for n in param_names))
            name = "+".join(roots) if len(roots) <= 3 else f"{roots[0]}..{roots[-1]}"
        if name in names:
            name = f"{name}#{index}"
        names.append(name)
    return names


def _matcher(module: nn.Module, coarse: bool) -> dict[str, object] | None:
    """``module.group_matcher(coarse=coarse)``, or ``None`` when the family does not implement that grouping.

    timm refuses a grouping it lacks with an ``assert`` (RDNet: "coarse grouping is not implemented for RDNet").
    """
    try:
        return module.group_matcher(coarse=coarse)  # type: ignore[operator,no-any-return]
    except (AssertionError, NotImplementedError):
        return None


def _timm_groups(module: nn.Module, coarse: bool) -> list[list[str]] | None:
    """The groups of timm's matcher (fine when coarse ones are asked for and missing); ``None`` when it has neither."""
    kind = type(module).__name__
    matcher = _matcher(module, coarse)
    if matcher is None and coarse:
        matcher = _matcher(module, coarse=False)
        if matcher is not None:
            rank_zero_info(
                f"{kind} has no coarse layer groups in timm (`group_matcher(coarse=True)` is not implemented): its"
                " layer groups are timm's fine groups (`coarse=False`) instead."
            )
    if matcher is None:
        return None
    grouped = group_parameters(module, matcher)
    return [list(grouped[key]) for key in sorted(grouped)]


def _children_groups(module: nn.Module) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for name, _ in module.named_parameters():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return list(groups.values())


def _announce_children_fallback(module: nn.Module, reason: str, raw: list[list[str]]) -> None:
    children = [names[0].split(".", 1)[0] for names in raw]
    rank_zero_info(
        f"{type(module).__name__} {reason}: its layer groups are its top-level children, in definition order"
        f" ({len(raw)} groups: {', '.join(children)})."
    )


def layer_groups(
    module: nn.Module, extra: Sequence[tuple[str, nn.Parameter]] = (), coarse: bool = True
) -> list[LayerGroup]:
    """Split a backbone into ordered layer groups, stem first and head last.

    Args:
        module: The backbone. A timm model is grouped by its ``group_matcher``; a module without one (non-timm
            modules, and timm's PiT, MetaFormer and CSATv2) by its top-level children. Fallbacks are announced with
            an info line on rank zero.
        extra: Named parameters outside the backbone that train with it (e.g. a separate classifier head of a
            LightningModule). They form one more group, named ``head``, appended last.
        coarse: Use timm's coarse groups (one per stage) rather than fine ones (one per block). A family without
            coarse groups (RDNet) uses its fine ones; one without either, its top-level children.

    Returns:
        Groups that partition the parameters of ``module`` (and ``extra``) exactly once.

    Raises:
        ValueError: If the module has no parameters, or the groups do not partition them exactly once.

    Example:
        >>> import timm
        >>> model = timm.create_model("test_resnet", num_classes=3)
        >>> [g.name for g in layer_groups(model)]
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
    """
    timm_raw = _timm_groups(module, coarse) if hasattr(module, "group_matcher") else None
    if timm_raw is None:
        raw = _children_groups(module)
        reason = (
            "has a `group_matcher` that implements neither coarse nor fine groups"
            if hasattr(module, "group_matcher")
            else "has no `group_matcher` (the timm hook that lists a model's layer groups)"
        )
        if raw:
            _announce_children_fallback(module, reason, raw)
    else:
        raw = timm_raw
    if not raw:
        raise ValueError(f"{type(module).__name__} has no parameters to group.")
    by_name = dict(module.named_parameters())
    extra_params = list(extra)
    names = _name_groups(raw, last_is_head=not extra_params)
    groups = [LayerGroup(n, tuple(r), tuple(by_name[p] for p in r)) for n, r in zip(names, raw)]
    if extra_params:
        extra_names = tuple(n for n, _ in extra_params)
        groups.append(LayerGroup("head", extra_names, tuple(p for _, p in extra_params)))
    _check_partition(module, extra_params, groups)
    return groups


def _check_partition(module: nn.Module, extra: list[tuple[str, nn.Parameter]], groups: list[LayerGroup]) -> None:
    expected = {id(p) for p in module.parameters()} | {id(p) for _, p in extra}
    seen: set[int] = set()
    for group in groups:
        for param in group.params:
            if id(param) in seen:
                raise ValueError(f"Parameter of group {group.name!r} appears in two layer groups.")
            seen.add(id(param))
    if seen != expected:
        raise ValueError(
            f"The layer groups of {type(module).__name__} cover {len(seen)} of its {len(expected)} parameters;"
            " every parameter must belong to exactly one group."
        )


def layout_fingerprint(groups: list[LayerGroup]) -> list[tuple[str, int]]:
    """A plain description of a grouping: ``(name, number of tensors)`` per group, used to check resumes."""
    return [(g.name, len(g.params)) for g in groups]


def module_layer_groups(
    pl_module: nn.Module, backbone_attr: str = "backbone", coarse: bool | None = None
) -> list[LayerGroup]:
    """The layer groups of a LightningModule: its own ``layer_groups`` when it has them, else its backbone's.

    A module that defines ``layer_groups`` (a list of :class:`LayerGroup`, as
    :class:`~lit_transfer.TransferClassifier` does) is the single source of truth: its optimizer's param groups
    were built from that very list, so a caller that reads it here cannot group the model differently. Any other
    module is grouped by :func:`layer_groups` on ``getattr(pl_module, backbone_attr)``, with the module's
    parameters outside the backbone as a final ``head`` group.

    Args:
        pl_module: The LightningModule.
        backbone_attr: Attribute that holds the backbone (used when the module has no ``layer_groups``).
        coarse: ``None`` takes the module's own grouping (coarse for a module without one). ``True``/``False`` ask
            for timm's coarse or fine groups; for a module with its own ``layer_groups`` they must give the same
            groups.

    Returns:
        The groups, stem first and head last.

    Raises:
        AttributeError: The module has neither ``layer_groups`` nor a backbone at ``backbone_attr``.
        ValueError: ``coarse`` asks for other groups than the module's own ``layer_groups``.

    Example:
        >>> from lit_transfer import TransferClassifier
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
        >>> module_layer_groups(model) is model.layer_groups
        True
    """
    own = getattr(pl_module, "layer_groups", None)
    if isinstance(own, list) and own and all(isinstance(g, LayerGroup) for g in own):
        if coarse is not None:
            asked = _grouped_backbone(pl_module, backbone_attr, coarse)
            if layout_fingerprint(asked) != layout_fingerprint(own):
                raise ValueError(
                    f"`coarse={coarse}` groups {type(pl_module).__name__} as {[g.name for g in asked]}, but its"
                    f" optimizer was built from its own `layer_groups` {[g.name for g in own]}. Leave `coarse` unset"
                    " (`None`) to use the module's groups."
                )
        return own
    return _grouped_backbone(pl_module, backbone_attr, True if coarse is None else coarse)


def _grouped_backbone(pl_module: nn.Module, backbone_attr: str, coarse: bool) -> list[LayerGroup]:
    backbone = getattr(pl_module, backbone_attr, None)
    if not isinstance(backbone, nn.Module):
        raise AttributeError(
            f"Layer groups need the backbone at `{type(pl_module).__name__}.{backbone_attr}`, found"
            f" {type(backbone).__name__}. Set `backbone_attr` to the attribute that holds it."
        )
    inside = {id(p) for p in backbone.parameters()}
    extra = [(n, p) for n, p in pl_module.named_parameters() if id(p) not in inside]
    return layer_groups(backbone, extra=extra, coarse=coarse)


def parameters_missing_from(optimizers: Iterable[torch.optim.Optimizer], module: nn.Module) -> list[str]:
    """Names of ``module``'s parameters that are in no param group of ``optimizers`` (compared by identity).

    Args:
        optimizers: The optimizers (e.g. ``trainer.optimizers``).
        module: The module whose parameters must all be held.

    Returns:
        The missing parameters' names, in ``named_parameters()`` order; empty when every one is held.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = net[0].requires_grad_(False)
        >>> sgd = torch.optim.SGD(filter(lambda p: p.requires_grad, net.parameters()), lr=0.1)
        >>> parameters_missing_from([sgd], net)
        ['0.weight', '0.bias']
    """
    held = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}
    return [name for name, param in module.named_parameters() if id(param) not in held]


def check_optimizers_hold_every_parameter(
    optimizers: Sequence[torch.optim.Optimizer], module: nn.Module, who: str = "LayerFreezing"
) -> None:
    """Refuse optimizers that leave out some of ``module``'s parameters, frozen ones included.

    Freezing toggles ``requires_grad`` only: a parameter frozen when the optimizer was built must already be in it,
    or it gets gradients after its group unfreezes and is never stepped. The usual culprit is
    ``SGD(filter(lambda p: p.requires_grad, self.parameters()))``, written for callbacks that add param groups at
    the unfreeze. A module without optimizers (nothing to step) passes.

    Args:
        optimizers: The optimizers (``trainer.optimizers``, after ``configure_optimizers``).
        module: The module whose parameters are frozen and unfrozen.
        who: The component that needs this, named in the message.

    Raises:
        ValueError: Naming the missing parameters and how to build the optimizer.
    """
    if not optimizers:
        return
    missing = parameters_missing_from(optimizers, module)
    if not missing:
        return
    total = sum(1 for _ in module.parameters())
    shown = ", ".join(f"`{n}`" for n in missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
    raise ValueError(
        f"{who} needs the optimizer to hold every parameter of {type(module).__name__}, frozen ones included, but"
        f" {len(missing)} of its {total} parameter tensors are in no param group: {shown}. They would get gradients"
        " once their layer group unfreezes and never be updated. Build the optimizer over all parameters, e.g."
        " `torch.optim.SGD(self.parameters(), ...)` instead of `filter(lambda p: p.requires_grad,"
        " self.parameters())`: frozen parameters cost nothing, since torch optimizers skip parameters without a"
        " gradient."
    )


def set_trainable(module: nn.Module, groups: Sequence[LayerGroup], mask: Sequence[bool], train_bn: bool) -> set[int]:
    """Set ``requires_grad`` of each group's parameters by ``mask``; the ids of the frozen ones.

    A frozen parameter's ``.grad`` is cleared, so no optimizer moves it. With ``train_bn`` the BatchNorm layers inside
    frozen groups keep training (their affine parameters stay trainable), as fastai does.
    """
    frozen: set[int] = set()
    for flag, group in zip(mask, groups):
        for param in group.params:
            param.requires_grad_(flag)
            if not flag:
                param.grad = None
                frozen.add(id(param))
    if train_bn:
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if isinstance(sub, _BatchNorm) and any(id(p) in frozen for p in own):
                for param in own:
                    param.requires_grad_(True)
    return frozen
