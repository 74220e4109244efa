"""Frozen-feature caching, the model's side: which features a timm backbone gives, and whether they stay fixed.

With ``cache_features=True`` a :class:`~lit_transfer.TransferClassifier` trains its classifier on features its frozen
backbone computed once (Kornblith et al., 2019's fixed-feature protocol). This module holds what depends on the
model: :func:`frozen_features` (the backbone's pre-logit features) and :func:`check_cacheable` (the policy and the
head keep them fixed). Computing them over a dataset, sharing them across DDP ranks and serving them to the fit and
validation loops is Trainer business, done by the :class:`~lit_transfer.callbacks.FeatureCache` callback.

Some timm heads hold more than the classifier (MobileNetV3's ``conv_head``, ConvNeXt's ``head.norm``): a phase that
trains the head group then trains layers after the pooling. :func:`trains_head_group_only` says when the rest of the
backbone is frozen and deterministic, and :class:`TrunkFeatures` gives what timm's ``forward_features`` returns
(the input of ``forward_head``, before pooling), checking on its first batch that nothing it ran trains or is
random; ``forward_head`` then runs live on them, as it does inside ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from lit_transfer.backbones import has_timm_head_api, single_classifier
from lit_transfer.freezing import FreezingPolicy, LinearProbe
from lit_transfer.freezing.layer_groups import layer_groups
from lit_transfer.training_state import kept_training_state, subtrees_within

__all__ = [
    "TrunkFeatures",
    "check_cacheable",
    "frozen_features",
    "head_is_classifier",
    "trains_head_group_only",
]


def check_cacheable(policy: FreezingPolicy, backbone: nn.Module, uses_mixup: bool) -> None:
    """Raise unless the features before the head stay fixed for the whole run.

    Args:
        policy: The freezing policy; it must be a linear probe without ``train_bn``.
        backbone: The timm model (with ``forward_features``, ``forward_head`` and ``get_classifier``).
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
    if not has_timm_head_api(backbone):
        raise ValueError(
            f"`cache_features=True` needs a timm model with `forward_features` and `forward_head`; got"
            f" {type(backbone).__name__}. Set `cache_features: false`."
        )


def head_is_classifier(backbone: nn.Module) -> bool:
    """Whether the backbone's head group is its classifier alone: a linear probe's input is then pre-logit.

    Otherwise (MobileNetV3's ``conv_head``, ConvNeXt's ``head.norm``) a linear probe trains layers of the head
    after the pooling, and what stays fixed is the output of ``forward_features`` (:class:`TrunkFeatures`).
    """
    classifier = single_classifier(backbone)
    if classifier is None:
        return False
    head = {id(p) for p in layer_groups(backbone)[-1].params}
    return head == {id(p) for p in classifier.parameters()}


def frozen_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logit features of a timm backbone in eval mode (no dropout), without gradients."""
    with kept_training_state(backbone), torch.no_grad():
        backbone.eval()
        # timm's model API, not on `nn.Module`
        forward_head = cast("Callable[..., torch.Tensor]", backbone.forward_head)
        forward_features = cast("Callable[[torch.Tensor], torch.Tensor]", backbone.forward_features)
        return forward_head(forward_features(x), pre_logits=True)


def _random_or_batch_dependent(module: nn.Module) -> bool:
    """BatchNorm, dropout and drop-path: modules whose output in training mode depends on the batch or the RNG."""
    stochastic = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
    return stochastic or "DropPath" in type(module).__name__


def _deterministic_outside(backbone: nn.Module, inside: set[int]) -> bool:
    """Whether no parameter outside ``inside`` (ids) trains and no module outside it is random in training mode."""
    if any(p.requires_grad for p in backbone.parameters() if id(p) not in inside):
        return False
    outside = (module for module in backbone.modules() if id(module) not in inside)
    return not any(module.training and _random_or_batch_dependent(module) for module in outside)


def trains_classifier_only(backbone: nn.Module) -> bool:
    """Whether, in the backbone's current state, only its classifier trains and nothing before it is random.

    True when every parameter outside ``backbone.get_classifier()`` has ``requires_grad=False`` and every BatchNorm,
    dropout and drop-path module outside it is in eval mode: the state a linear probe, or the head-only first phase
    of freeze-unfreeze, is in once :class:`~lit_transfer.callbacks.LayerFreezing` has frozen it. Then the
    classifier's input of a sample is :func:`frozen_features` of it, whatever the step.
    """
    classifier = single_classifier(backbone)
    if classifier is None:
        return False
    inside = {id(p) for p in classifier.parameters()} | {id(m) for m in classifier.modules()}
    return _deterministic_outside(backbone, inside)


def trains_head_group_only(backbone: nn.Module) -> bool:
    """Whether only the backbone's head group (its last layer group) trains and nothing outside the head is random.

    The head's modules are those whose parameters all belong to the head group (with everything inside them);
    every parameter outside them must be frozen and every BatchNorm, dropout and drop-path module outside them in
    eval mode. Then ``forward_features`` of a sample is the same at every step (:class:`TrunkFeatures` checks on
    its first batch that it runs no module that trains or is random) and ``forward_head`` on it gives the step's
    outputs.
    """
    if not has_timm_head_api(backbone):
        return False
    head_params = {id(p) for p in layer_groups(backbone)[-1].params}
    if any(p.requires_grad for p in backbone.parameters(recurse=False)):  # used anywhere in `forward`: not a head
        return False
    in_head = subtrees_within(backbone, head_params)
    inside: set[int] = set(head_params)
    for module in backbone.modules():
        if module is not backbone and in_head[id(module)]:
            inside.update(id(m) for m in module.modules())
    return _deterministic_outside(backbone, inside)


class TrunkFeatures:
    """What timm's ``forward_features`` gives for a batch (the input of ``forward_head``), in eval mode, no gradients.

    On its first batch it records every module ``forward_features`` runs and refuses (``ValueError``) any that has
    a trainable parameter or was random in training mode before the call: features computed once must be the ones
    every step would compute.

    Args:
        backbone: The timm model, frozen outside its head group (:func:`trains_head_group_only`).
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self.checked = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The ``forward_features`` output of a batch (checked on the first call)."""
        backbone = self.backbone
        forward_features = cast("Callable[[torch.Tensor], torch.Tensor]", backbone.forward_features)  # timm API
        with kept_training_state(backbone), torch.no_grad():
            if self.checked:
                backbone.eval()
                return forward_features(x)
            modes = {id(m): m.training for m in backbone.modules()}
            backbone.eval()
            ran: list[nn.Module] = []
            hooks = [m.register_forward_pre_hook(lambda module, _: ran.append(module)) for m in backbone.modules()]
            try:
                features = forward_features(x)
            finally:
                for hook in hooks:
                    hook.remove()
        names = {id(m): name for name, m in backbone.named_modules()}
        live = [
            names[id(m)]
            for m in dict.fromkeys(ran)  # each module once, in the order it ran
            if any(p.requires_grad for p in m.parameters(recurse=False))
            or (modes[id(m)] and _random_or_batch_dependent(m))
        ]
        if live:
            raise ValueError(
                f"Cached features need a frozen, deterministic `forward_features`, but in {type(backbone).__name__}"
                f" it runs {', '.join(live[:3])}, which train(s) or are random in this phase. Set"
                " `cache_features: false`."
            )
        self.checked = True
        return features
