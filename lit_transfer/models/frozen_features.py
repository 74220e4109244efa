"""Frozen-feature caching, the model's side: which features a timm backbone gives, and whether they stay fixed.

With ``cache_features=True`` a :class:`~lit_transfer.TransferClassifier` trains its classifier on features its frozen
backbone computed once (Kornblith et al., 2019's fixed-feature protocol). This module holds what depends on the
model: :func:`frozen_features` (the backbone's pre-logit features) and :func:`check_cacheable` (the policy and the
head keep them fixed). Computing them over a dataset, sharing them across DDP ranks and serving them to the fit and
validation loops is Trainer business, done by the :class:`~lit_transfer.callbacks.FeatureCache` callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from lit_transfer.freezing import FreezingPolicy, LinearProbe
from lit_transfer.freezing.layer_groups import layer_groups
from lit_transfer.training_state import kept_training_state

__all__ = ["check_cacheable", "frozen_features"]


def check_cacheable(policy: FreezingPolicy, backbone: nn.Module, uses_mixup: bool) -> None:
    """Raise unless the features before the classifier stay fixed for the whole run.

    Args:
        policy: The freezing policy; it must be a linear probe without ``train_bn``.
        backbone: The timm model; its head group must hold only the classifier (a final norm would train).
        uses_mixup: Whether mixup/CutMix changes the inputs.

    Raises:
        ValueError: Naming the condition that fails and the setting to change.
    """
    if not isinstance(policy, LinearProbe) or policy.train_bn:
        raise ValueError(
            f"`cache_features=True` needs a frozen backbone: `freeze: linear_probe` without `train_bn`, got"
            f" {policy!r}. Either use a linear probe or set `cache_features: false`."
        )
    if uses_mixup:
        raise ValueError("`cache_features=True` cannot be combined with mixup/CutMix, which change every input.")
    head = {id(p) for p in layer_groups(backbone)[-1].params}
    get_classifier = cast("Callable[[], nn.Module]", backbone.get_classifier)  # timm API, not on `nn.Module`
    classifier = {id(p) for p in get_classifier().parameters()}
    if head != classifier:
        raise ValueError(
            f"`cache_features=True` needs a head that is only the classifier; the head group of"
            f" {type(backbone).__name__} also holds other layers (e.g. a final norm), which a linear probe trains."
            " Set `cache_features: false`."
        )


def frozen_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logit features of a timm backbone in eval mode (no dropout), without gradients."""
    with kept_training_state(backbone), torch.no_grad():
        backbone.eval()
        # timm's model API, not on `nn.Module`
        forward_head = cast("Callable[..., torch.Tensor]", backbone.forward_head)
        forward_features = cast("Callable[[torch.Tensor], torch.Tensor]", backbone.forward_features)
        return forward_head(forward_features(x), pre_logits=True)


def trains_classifier_only(backbone: nn.Module) -> bool:
    """Whether, in the backbone's current state, only its classifier trains and nothing before it is random.

    True when every parameter outside ``backbone.get_classifier()`` has ``requires_grad=False`` and every BatchNorm,
    dropout and drop-path module outside it is in eval mode: the state a linear probe, or the head-only first phase
    of freeze-unfreeze, is in once :class:`~lit_transfer.callbacks.LayerFreezing` has frozen it. Then the
    classifier's input of a sample is :func:`frozen_features` of it, whatever the step.
    """
    get_classifier = getattr(backbone, "get_classifier", None)
    if not callable(get_classifier) or not hasattr(backbone, "forward_head"):
        return False
    classifier = cast("nn.Module", get_classifier())
    inside = {id(p) for p in classifier.parameters()} | {id(m) for m in classifier.modules()}
    if any(p.requires_grad for p in backbone.parameters() if id(p) not in inside):
        return False
    for module in backbone.modules():
        if id(module) in inside or not module.training:
            continue
        random_or_batch_dependent = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
        if random_or_batch_dependent or "DropPath" in type(module).__name__:
            return False
    return True
