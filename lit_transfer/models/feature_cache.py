"""Frozen-feature caching: compute a frozen backbone's features once, then train only the classifier on them.

This is the fixed-feature protocol of Kornblith et al. (2019, "Do Better ImageNet Models Transfer Better?"):
with the whole backbone frozen and deterministic inputs (no augmentation), every epoch after the first skips
the backbone entirely. Samples are recognised by an exact hash of their input tensor, so any DataLoader,
shuffled or sharded across DDP ranks, works unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from lit_transfer.freezing import FreezingPolicy, LinearProbe
from lit_transfer.layer_groups import layer_groups

__all__ = ["FeatureCache", "check_cacheable", "frozen_features"]


class FeatureCache:
    """Backbone features of the samples seen so far, keyed by a hash of each input tensor.

    Example:
        >>> cache = FeatureCache()
        >>> calls = []
        >>> extract = lambda x: calls.append(len(x)) or x.flatten(1)[:, :2] * 2
        >>> x = torch.arange(12.0).reshape(3, 4)
        >>> cache.features(x, extract).tolist()
        [[0.0, 2.0], [8.0, 10.0], [16.0, 18.0]]
        >>> _ = cache.features(x[[2, 0]], extract)  # served from the cache
        >>> calls, len(cache)
        ([3], 3)
    """

    def __init__(self) -> None:
        self._store: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every cached feature (e.g. when the backbone's weights change)."""
        self._store.clear()

    @staticmethod
    def _key(sample: torch.Tensor) -> bytes:
        data = sample.detach().contiguous().cpu().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).digest() + str(tuple(sample.shape)).encode()

    def features(self, inputs: torch.Tensor, extract: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Features of a batch: cached rows are reused, the others computed with ``extract`` and stored.

        Args:
            inputs: A batch of inputs ``(N, ...)``.
            extract: Computes features ``(M, D)`` for a batch of ``M`` inputs.

        Returns:
            The ``(N, D)`` features, in the order of ``inputs``.
        """
        keys = [self._key(sample) for sample in inputs]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        if missing:
            computed = extract(inputs[missing]).detach()
            for index, row in zip(missing, computed):
                self._store[keys[index]] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self._store[key] for key in keys])


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
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    try:
        with torch.no_grad():
            # timm's model API, not on `nn.Module`
            forward_head = cast("Callable[..., torch.Tensor]", backbone.forward_head)
            forward_features = cast("Callable[[torch.Tensor], torch.Tensor]", backbone.forward_features)
            return forward_head(forward_features(x), pre_logits=True)
    finally:
        for module, mode in modes.items():
            module.training = mode
