"""Frozen-feature caching: compute a frozen backbone's features once, then train only the classifier on them.

This is the fixed-feature protocol of Kornblith et al. (2019, "Do Better ImageNet Models Transfer Better?"):
with the whole backbone frozen and deterministic inputs (no augmentation), the backbone's pre-logit features of
every sample never change. At the start of ``fit`` one pass over each dataset computes them; from then on the
Trainer's train and validation DataLoaders are replaced by loaders over the stored features that keep the
original **batch sampler** (same order, shuffling, ``DistributedSampler`` shard, ``drop_last``, batch size). No
image is decoded, augmented or sent through the backbone again, and the classifier sees the same batches in the
same order as without the cache. Under DDP every rank computes the features of ``1/world_size`` of the samples
and the ranks exchange them (``all_gather``), so each rank can serve whatever its sampler draws in later epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lit_transfer._compat import replace_loop_dataloaders
from lit_transfer.freezing import FreezingPolicy, LinearProbe
from lit_transfer.layer_groups import layer_groups

__all__ = ["CachedFeatures", "FeatureCache", "check_cacheable", "frozen_features"]

Extract = Callable[[torch.Tensor], torch.Tensor]


class CachedFeatures(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Features and labels of a dataset, indexed like it; a list of indices is served in one tensor operation.

    Example:
        >>> data = CachedFeatures(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 0]))
        >>> features, labels = data.__getitems__([2, 0])
        >>> features.tolist(), labels.tolist(), len(data)
        ([[4.0, 5.0], [0.0, 1.0]], [0, 0], 3)
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.features[index], self.labels[index]


def _whole_batch(batch: Any) -> Any:
    """Collate function of :class:`CachedFeatures` batches, which ``__getitems__`` already builds as tensors."""
    return batch


class FeatureCache:
    """Serves a fit's train and validation batches from features computed once by a frozen backbone.

    :class:`~lit_transfer.TransferClassifier` (``cache_features=True``) calls :meth:`serve_training` at every
    training epoch start and :meth:`serve_validation` at every validation start; both are cheap once the features
    exist, and they reinstall the feature loaders when Lightning rebuilt the DataLoaders (e.g.
    ``reload_dataloaders_every_n_epochs`` for a batch-size ramp), reusing the features while the dataset is the
    same object.

    Args:
        extract: Maps a batch of inputs to the frozen backbone's pre-logit features ``(N, D)``.
    """

    def __init__(self, extract: Extract) -> None:
        self.extract = extract
        self._features: dict[int, CachedFeatures] = {}  # id(dataset) -> its features
        self._datasets: dict[int, Any] = {}  # keeps each keyed dataset alive, so its id stays unique

    def serve_training(self, trainer: pl.Trainer) -> None:
        """Replace the Trainer's train DataLoader by one over cached features (computing them the first time)."""
        _serve(trainer, trainer.fit_loop, self, "train")

    def serve_validation(self, trainer: pl.Trainer) -> None:
        """Replace the Trainer's validation DataLoaders by ones over cached features (computing them once)."""
        _serve(trainer, trainer.fit_loop.epoch_loop.val_loop, self, "validation")

    def features_of(self, trainer: pl.Trainer, loader: DataLoader[Any], role: str) -> CachedFeatures:
        """The cached features of ``loader``'s dataset, computed (and shared across DDP ranks) the first time."""
        dataset = loader.dataset
        key = id(dataset)
        if key not in self._features:
            self._features[key] = self._compute(trainer, loader, role)
            self._datasets[key] = dataset
        return self._features[key]

    def _compute(self, trainer: pl.Trainer, loader: DataLoader[Any], role: str) -> CachedFeatures:
        dataset = loader.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                f"`cache_features=True` needs a map-style {role} dataset (with `__len__` and `__getitem__`) so that"
                f" features can be stored per sample; got {type(dataset).__name__}. Set `cache_features: false`"
                " for iterable datasets."
            )
        rank, world = trainer.global_rank, trainer.world_size
        size = len(dataset)
        mine = list(range(rank, size, world))  # this rank's share of the samples
        batch_size = getattr(loader, "batch_size", None) or getattr(loader.batch_sampler, "batch_size", None) or 64
        sequential = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=mine,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
            generator=torch.Generator(),  # its workers' base seed must not be drawn from the run's global RNG
        )
        device = trainer.strategy.root_device
        features, labels = [], []
        with trainer.precision_plugin.forward_context():
            for batch in sequential:
                x, y = batch[0], batch[1]
                features.append(self.extract(x.to(device)).float())
                labels.append(y.to(device))
        if features:
            local_x, local_y = torch.cat(features), torch.cat(labels)
        else:  # a rank with no samples (tiny dataset, many ranks): shapes come from one sample
            probe_x = self.extract(sequential.collate_fn([dataset[0]])[0].to(device)).float()
            local_x, local_y = probe_x[:0], torch.zeros(0, dtype=torch.long, device=device)
        return _gather(trainer, local_x, local_y, size)


def _gather(trainer: pl.Trainer, local_x: torch.Tensor, local_y: torch.Tensor, size: int) -> CachedFeatures:
    """Assemble every rank's share (rank ``r`` holds samples ``r, r + W, ...``) into the whole dataset's features."""
    world = trainer.world_size
    if world == 1:
        return CachedFeatures(local_x.cpu(), local_y.cpu())
    share = -(-size // world)
    pad = share - len(local_y)
    padded_x = torch.cat([local_x, local_x.new_zeros(pad, *local_x.shape[1:])])
    padded_y = torch.cat([local_y, local_y.new_zeros(pad)])
    all_x = trainer.strategy.all_gather(padded_x).cpu()  # (world, share, D)
    all_y = trainer.strategy.all_gather(padded_y).cpu()
    features = all_x.new_empty(size, *all_x.shape[2:])
    labels = all_y.new_empty(size)
    for rank in range(world):
        count = len(range(rank, size, world))
        features[rank::world] = all_x[rank, :count]
        labels[rank::world] = all_y[rank, :count]
    return CachedFeatures(features, labels)


def _serve(trainer: pl.Trainer, loop: Any, cache: FeatureCache, role: str) -> None:
    """Swap ``loop``'s DataLoaders for feature loaders with the same batch samplers, then restart its iterator.

    Lightning offers no public hook to replace a DataLoader in the middle of ``fit``: see
    :func:`lit_transfer._compat.replace_loop_dataloaders`.
    """
    # A new iterator draws a seed from the global RNG; restoring it keeps every later draw (shuffling, dropout) the
    # same as in a run without the cache.
    with torch.random.fork_rng(devices=[]):
        replace_loop_dataloaders(loop, lambda loaders: _feature_loaders(trainer, loaders, cache, role))


def _feature_loaders(trainer: pl.Trainer, loaders: list[Any], cache: FeatureCache, role: str) -> list[Any] | None:
    """Loaders over cached features with the batch samplers of ``loaders``; ``None`` when they already are."""
    if all(isinstance(loader, DataLoader) and isinstance(loader.dataset, CachedFeatures) for loader in loaders):
        return None
    replaced = []
    for loader in loaders:
        if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
            raise ValueError(
                f"`cache_features=True` needs each {role} DataLoader to be a torch `DataLoader` with a batch size"
                f" (got {type(loader).__name__}). Set `cache_features: false` for this data."
            )
        if isinstance(loader.dataset, CachedFeatures):
            replaced.append(loader)
            continue
        cached = cache.features_of(trainer, loader, role)
        replaced.append(DataLoader(cached, batch_sampler=loader.batch_sampler, collate_fn=_whole_batch))
    return replaced


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
