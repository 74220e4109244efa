"""FeatureCache: serve a fit's train and validation batches from features a frozen backbone computed once.

This is the fixed-feature protocol of Kornblith et al. (2019, "Do Better ImageNet Models Transfer Better?"): with
the whole backbone frozen and deterministic inputs (no augmentation), the backbone's pre-logit features of every
sample never change. At the first training epoch (and the first validation) of ``fit`` one pass over each dataset
computes them; from then on the Trainer's train and validation DataLoaders are replaced by loaders over the stored
features that keep the original **batch sampler** (same order, shuffling, ``DistributedSampler`` shard,
``drop_last``, batch size). No image is decoded, augmented or sent through the backbone again, and the module sees
the same batches in the same order as without the cache, with ``(N, D)`` features in place of images. Under DDP
every rank computes the features of ``1/world_size`` of the samples and the ranks exchange them (``all_gather``), so
each rank can serve whatever its sampler draws in later epochs.

What the features are (and whether they stay fixed) is the model's business:
:func:`lit_transfer.models.frozen_features.frozen_features` and
:func:`~lit_transfer.models.frozen_features.check_cacheable` for a timm backbone.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_transfer._compat import loop_dataloaders, replace_loop_dataloaders
from lit_transfer.dataset_features import CachedFeatures, Extract, compute_features

__all__ = ["CachedFeatures", "FeatureCache", "serving_features"]


def _whole_batch(batch: Any) -> Any:
    """Collate function of :class:`CachedFeatures` batches, which ``__getitems__`` already builds as tensors."""
    return batch


class FeatureCache(Callback):
    """Train and validate on features computed once, instead of images, during ``fit``.

    :class:`~lit_transfer.TransferClassifier` adds it (``cache_features=True``). At every training epoch start and
    every validation start of ``fit`` it installs loaders over cached features; both are cheap once the features
    exist, and they reinstall the feature loaders when Lightning rebuilt the DataLoaders (e.g.
    ``reload_dataloaders_every_n_epochs`` for a batch-size ramp), reusing the features while the dataset is the same
    object. The features are freed at the end of ``fit``; ``validate``, ``test`` and ``predict`` see images.

    Its module must accept a batch of features where it gets images (the classifier runs only its head on 2-D
    inputs), and must refuse training data that is augmented: features computed once hold one view of each sample
    (the classifier checks the DataModule's ``train_transform`` in ``setup``).

    Args:
        extract: Maps a batch of inputs to the frozen backbone's pre-logit features ``(N, D)``, without gradients.
    """

    def __init__(self, extract: Extract) -> None:
        self.extract = extract
        self._features: dict[int, CachedFeatures] = {}  # id(dataset) -> its features
        self._datasets: dict[int, Any] = {}  # keeps each keyed dataset alive, so its id stays unique

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.serve_training(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.serve_validation(trainer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clear()

    # ---------------------------------------------------------------- serving
    def serve_training(self, trainer: pl.Trainer) -> None:
        """Replace the Trainer's train DataLoader by one over cached features (computing them the first time)."""
        _serve(trainer, trainer.fit_loop, self, "train")

    def serve_validation(self, trainer: pl.Trainer) -> None:
        """Replace the Trainer's validation DataLoaders by ones over cached features (computing them once)."""
        _serve(trainer, trainer.fit_loop.epoch_loop.val_loop, self, "validation")

    def clear(self) -> None:
        """Free the cached features: they are only valid for one ``fit``."""
        self._features.clear()
        self._datasets.clear()

    # -------------------------------------------------------------- computing
    def features_of(self, trainer: pl.Trainer, loader: DataLoader[Any], role: str) -> CachedFeatures:
        """The cached features of ``loader``'s dataset, computed (and shared across DDP ranks) the first time."""
        dataset = loader.dataset
        key = id(dataset)
        if key not in self._features:
            self._features[key] = self._compute(trainer, loader, role)
            self._datasets[key] = dataset
        return self._features[key]

    def _compute(self, trainer: pl.Trainer, loader: DataLoader[Any], role: str) -> CachedFeatures:
        return compute_features(trainer, loader, self.extract, role, progress=f"FeatureCache: {role} features")


def serving_features(trainer: pl.Trainer, training: bool) -> bool:
    """Whether the fit's training (``training=True``) or validation loop iterates loaders over cached features now."""
    loop = trainer.fit_loop if training else trainer.fit_loop.epoch_loop.val_loop
    return any(isinstance(getattr(loader, "dataset", None), CachedFeatures) for loader in loop_dataloaders(loop))


def _serve(trainer: pl.Trainer, loop: Any, cache: FeatureCache, role: str) -> None:
    """Swap ``loop``'s DataLoaders for feature loaders with the same batch samplers, then restart its iterator.

    Lightning offers no public hook to replace a DataLoader in the middle of ``fit``: see
    :func:`lit_transfer._compat.replace_loop_dataloaders`.
    """
    # A new iterator draws a seed from the global RNG; restoring it keeps every later draw (shuffling, dropout) the
    # same as in a run without the cache.
    with isolate_rng(include_cuda=False):
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
        # The image loader's generator: each new iterator draws its base seed where the image loader's would (from
        # the global RNG when it has none), so later draws (dropout) match a run on images.
        replaced.append(
            DataLoader(cached, batch_sampler=loader.batch_sampler, collate_fn=_whole_batch, generator=loader.generator)
        )
    return replaced
