"""Training samplers whose order is a pure function of (seed, epoch), rank-aware under DDP.

Both samplers subclass :class:`torch.utils.data.DistributedSampler`. Lightning leaves a ``DistributedSampler``
in place (it only injects its own when the loader's sampler is not one), calls ``set_epoch`` on it every epoch,
and the order never touches the global RNG, so a resumed run sees exactly the batches of an uninterrupted one.
Outside DDP they act as ``num_replicas=1`` samplers.

``set_epoch`` also forwards the epoch to the dataset (augmentation seeds, see :mod:`lit_transfer.data.workers`)
and reseeds the generator the DataLoader draws its worker base seed from (:attr:`EpochSampler.loader_generator`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def _world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"`rank` must be in [0, num_replicas), got rank={rank!r}, num_replicas={num_replicas!r}.")
    return num_replicas, rank


def epoch_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (e.g. ``seed, epoch, rank``) through ``np.random.SeedSequence``."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, np.uint64)[0]) >> 1


class EpochSampler(DistributedSampler):
    """Shuffled (or sequential) sampling, order = f(seed, epoch), one shard per rank.

    Args:
        dataset: The dataset (its ``set_epoch(epoch, rank)`` is called when present).
        seed: Base seed of the order.
        shuffle: Shuffle every epoch; ``False`` keeps dataset order.
        num_replicas: World size; default from ``torch.distributed`` when initialised, else 1.
        rank: Global rank; default from ``torch.distributed`` when initialised, else 0.
        drop_last: Drop the tail instead of padding so every rank gets the same count.

    Example:
        >>> sampler = EpochSampler(list(range(6)), seed=0)
        >>> sampler.set_epoch(3)
        >>> first = list(sampler)
        >>> sampler.set_epoch(3)
        >>> first == list(sampler), sorted(first)
        (True, [0, 1, 2, 3, 4, 5])
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        num_replicas, rank = _world(num_replicas, rank)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.loader_generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``; also seeds the dataset's augmentations and the loader's worker seeds."""
        super().set_epoch(epoch)
        self.loader_generator.manual_seed(epoch_seed(self.seed, epoch, 0x10ADE5))
        set_dataset_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(epoch, self.rank)


class BalancedSampler(EpochSampler):
    """Class-balanced sampling with replacement: each class is drawn equally often in expectation.

    Every epoch draws ``num_samples * num_replicas`` indices (at least the dataset length) from a multinomial with
    weight ``1 / count(class)`` per sample, using a generator seeded by (seed, epoch); rank ``r`` takes positions
    ``r, r + world, ...`` of that draw, so ranks partition the epoch's draws exactly and see the same count.

    Under Lightning DDP this sampler is kept as is (it is a ``DistributedSampler``). Passing
    ``Trainer(use_distributed_sampler=False)`` is harmless and makes the intent explicit.

    Args:
        dataset: The dataset.
        labels: Class index of every sample, in dataset order.
        seed: Base seed.
        num_samples: Draws per epoch over all ranks; default ``len(labels)``.
        num_replicas: World size; default from ``torch.distributed`` when initialised, else 1.
        rank: Global rank; default from ``torch.distributed`` when initialised, else 0.
    """

    def __init__(
        self,
        dataset: Dataset,
        labels: Sequence[int],
        seed: int = 0,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        if labels_t.numel() == 0:
            raise ValueError("`labels` is empty: a balanced sampler needs at least one sample.")
        counts = torch.bincount(labels_t).double()
        self.weights = 1.0 / counts[labels_t]
        super().__init__(dataset, seed=seed, shuffle=True, num_replicas=num_replicas, rank=rank)
        total = int(num_samples or labels_t.numel())
        if total < 1:
            raise ValueError(f"`num_samples` must be positive, got {num_samples!r}.")
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def epoch_draws(self) -> list[int]:
        """All ranks' draws of the current epoch, in global order (rank ``r`` takes every ``world``-th one)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_draws()[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
