"""Features of every sample of a dataset, computed once by a frozen network and shared across DDP ranks.

Used by :class:`~lit_transfer.callbacks.FeatureCache` (the fixed-feature protocol: a linear probe trained on
features instead of images) and :class:`~lit_transfer.callbacks.HeadProbe` (a classifier fitted to the features of
a few augmented views before a fit trains).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm import tqdm

from lit_transfer.callbacks.synchronized_stop import sigterm_agreed

__all__ = ["CachedFeatures", "Extract", "compute_features"]

Extract = Callable[[torch.Tensor], torch.Tensor]
"""Maps a batch of inputs to features ``(N, ...)``, without gradients."""


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


def compute_features(
    trainer: pl.Trainer,
    loader: DataLoader[Any],
    extract: Extract,
    role: str,
    generator: torch.Generator | None = None,
    setting: tuple[str, str] = ("cache_features=True", "cache_features: false"),
    stop_on_sigterm: bool = False,
    progress: str | None = None,
) -> CachedFeatures:
    """``extract`` of every sample of ``loader``'s dataset in dataset order, each rank computing its share.

    Rank ``r`` of ``W`` runs the samples ``r, r + W, ...`` through a sequential loader (the loader's workers and
    collate function) and the ranks exchange their features (``all_gather``), so every rank ends with all of them.

    Args:
        trainer: The Trainer (its rank, world size, device and precision).
        loader: The DataLoader whose dataset is read (map-style).
        extract: Maps a batch of inputs to features, without gradients.
        role: ``"train"`` or ``"validation"``, for the error message.
        generator: The sequential loader's generator (its workers' seeds); default a fixed one, independent of
            the run's global RNG.
        setting: The setting that asked for the features and how to turn it off, named by the error message.
        stop_on_sigterm: After every batch, ask whether SIGTERM stops the command
            (:func:`~lit_transfer.callbacks.synchronized_stop.sigterm_agreed`; every rank asks as often as rank 0,
            whose share is the largest) and raise Lightning's ``SIGTERMException`` if so. For work before the
            first training step only: a stop elsewhere is the training loop's to make.
        progress: The label of a progress bar over the batches, shown by rank 0 when the Trainer shows one
            (``enable_progress_bar``); ``None``: no bar.

    Raises:
        ValueError: For an iterable dataset, naming ``setting``.
        SIGTERMException: With ``stop_on_sigterm``, when SIGTERM arrived.
    """
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"`{setting[0]}` needs a map-style {role} dataset (with `__len__` and `__getitem__`) so that features can"
            f" be stored per sample; got {type(dataset).__name__}. Set `{setting[1]}` for iterable datasets."
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
        generator=generator or torch.Generator(),  # workers' base seed: never drawn from the run's global RNG
    )
    device = trainer.strategy.root_device
    rounds = -(-len(range(0, size, world)) // batch_size)  # rank 0's batches: the most of any rank
    batches = iter(sequential)
    features, labels = [], []
    shown = progress is not None and trainer.is_global_zero and trainer.progress_bar_callback is not None
    with trainer.precision_plugin.forward_context():
        for _ in tqdm(range(rounds), desc=progress, leave=False, dynamic_ncols=True, disable=not shown):
            batch = next(batches, None)
            if batch is not None:
                features.append(extract(batch[0].to(device)).float())
                labels.append(batch[1].to(device))
            if stop_on_sigterm and sigterm_agreed(trainer):
                raise SIGTERMException
    if features:
        local_x, local_y = torch.cat(features), torch.cat(labels)
    else:  # a rank with no samples (tiny dataset, many ranks): shapes come from one sample
        probe = sequential.collate_fn([dataset[0]])
        probe_x = extract(probe[0].to(device)).float()
        local_x, local_y = probe_x[:0], probe[1][:0].to(device)
    return _gather(trainer, local_x, local_y, size)


def _gather(trainer: pl.Trainer, local_x: torch.Tensor, local_y: torch.Tensor, size: int) -> CachedFeatures:
    """Assemble every rank's share (rank ``r`` holds samples ``r, r + W, ...``) into the whole dataset's features."""
    world = trainer.world_size
    if world == 1:
        return CachedFeatures(local_x.cpu(), local_y.cpu())
    share = -(-size // world)
    pad = share - len(local_y)
    padded_x = torch.cat([local_x, local_x.new_zeros(pad, *local_x.shape[1:])])
    padded_y = torch.cat([local_y, local_y.new_zeros(pad, *local_y.shape[1:])])
    all_x = trainer.strategy.all_gather(padded_x).cpu()  # (world, share, D)
    all_y = trainer.strategy.all_gather(padded_y).cpu()
    features = all_x.new_empty(size, *all_x.shape[2:])
    labels = all_y.new_empty(size, *all_y.shape[2:])  # class indices, or multi-hot / regression targets
    for rank in range(world):
        count = len(range(rank, size, world))
        features[rank::world] = all_x[rank, :count]
        labels[rank::world] = all_y[rank, :count]
    return CachedFeatures(features, labels)
