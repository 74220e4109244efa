"""Ordered layer groups of a backbone, from timm's own ``group_matcher``.

A layer group is a named set of parameters that is frozen, unfrozen and learning-rate-scaled as a unit. For a
timm model the groups are exactly timm's coarse groups (stem, one per stage or block, head); any other
``nn.Module`` falls back to its top-level children. Groups are ordered from the input (stem) to the output
(head), partition the module's parameters exactly once, and keep the parameter order of
``named_parameters()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lightning.pytorch.utilities import rank_zero_info
from timm.models import group_parameters
from torch import nn

__all__ = ["LayerGroup", "layer_groups", "layout_fingerprint"]


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


def _timm_groups(module: nn.Module, coarse: bool) -> list[list[str]]:
    grouped = group_parameters(module, module.group_matcher(coarse=coarse))  # type: ignore[operator]
    return [list(grouped[key]) for key in sorted(grouped)]


def _children_groups(module: nn.Module) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for name, _ in module.named_parameters():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return list(groups.values())


def layer_groups(
    module: nn.Module, extra: Sequence[tuple[str, nn.Parameter]] = (), coarse: bool = True
) -> list[LayerGroup]:
    """Split a backbone into ordered layer groups, stem first and head last.

    Args:
        module: The backbone. A timm model is grouped by its ``group_matcher``; any other module by its
            top-level children (announced once on rank zero).
        extra: Named parameters outside the backbone that train with it (e.g. a separate classifier head of a
            LightningModule). They form one more group, named ``head``, appended last.
        coarse: Use timm's coarse groups (one per stage) rather than fine ones (one per block).

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
    if hasattr(module, "group_matcher"):
        raw = _timm_groups(module, coarse)
    else:
        rank_zero_info(
            f"{type(module).__name__} is not a timm model (it has no `group_matcher`): its layer groups are its"
            " top-level children, in definition order."
        )
        raw = _children_groups(module)
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
