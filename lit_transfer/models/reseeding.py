"""Reseed the global RNGs before every training batch, so that a resumed ``fit`` draws what the whole run drew.

Dropout, drop-path (stochastic depth) and mixup/CutMix draw from global generators (torch's CPU and CUDA ones,
NumPy's and Python's), whose states no Lightning checkpoint holds: resuming a run with ``drop_rate=0.2`` ended with
weights 5e-3 away from the uninterrupted run's. Saving and restoring the states is not enough either: between the
checkpoint and the first resumed batch Lightning creates the DataLoader iterator at another point than an
uninterrupted run does (and with ``reload_dataloaders_every_n_epochs`` a different number of times), and a plain
DataLoader draws its base seed from the global generator there; under DDP every rank has its own states, and only
rank 0's checkpoint is written.

So before each training batch the generators are set to a state that is a function of ``(seed, epoch, batch, global
rank)``, as fairseq seeds each update from ``(seed, update)``. The ``seed`` is drawn once per ``fit`` from torch's
global generator (``seed_everything`` makes a run repeatable; unseeded runs differ), broadcast from rank 0, saved in
checkpoints (top-level key ``"rng_seed"``) and read back by a resume. Resumed at an epoch boundary, a run then draws
the same numbers as the uninterrupted one, on one device and under DDP (every rank its own stream, derived from the
one saved seed).

Where the claim stops:

* The *data* must be the same too. lit_transfer's DataModules order and augment by ``(seed, epoch, rank,
  worker)``; a plain DataLoader with ``shuffle=True``, or random transforms that draw from the global generators (in
  the main process or in workers, whose seeds come from the iterator's base seed), is not reproduced.
* A mid-epoch checkpoint (an interruption) resumes with the model's draws of the right batch index, but Lightning
  restarts a plain DataLoader from its first batch, so the batches themselves differ.
* Other accelerators than CUDA and MPS (XPU, HPU) keep their own generators' streams.
"""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import numpy as np
import torch

from lit_transfer.errors import is_int

__all__ = ["BatchReseeding", "draw_seed", "reseed_for_batch"]


def draw_seed() -> int:
    """A fresh 63-bit seed from torch's global generator (repeatable after ``seed_everything``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> a = draw_seed()
        >>> _ = torch.manual_seed(0)
        >>> a == draw_seed()
        True
    """
    return int(torch.randint(0, 2**63 - 1, (1,)).item())


def reseed_for_batch(seed: int, epoch: int, batch_idx: int, rank: int) -> None:
    """Set torch's (CPU, and CUDA/MPS when in use), NumPy's and Python's global generators for one training batch.

    About 20 microseconds: the seeds come from a BLAKE2b hash of the four numbers, and torch's generators are
    seeded one by one (``torch.manual_seed`` also queues seeds for every uninitialised accelerator, at ~10x the cost).

    Args:
        seed: The run's seed (:func:`draw_seed`, saved in checkpoints).
        epoch: The current epoch.
        batch_idx: The batch's index in the epoch.
        rank: The global rank (each process draws its own numbers).

    Example:
        >>> reseed_for_batch(7, epoch=2, batch_idx=5, rank=0)
        >>> first = torch.rand(3), np.random.rand(), random.random()
        >>> reseed_for_batch(7, epoch=2, batch_idx=5, rank=0)
        >>> torch.equal(first[0], torch.rand(3)) and first[1:] == (np.random.rand(), random.random())
        True
    """
    digest = hashlib.blake2b(struct.pack("<4Q", seed, epoch, batch_idx, rank), digest_size=16).digest()
    torch_seed, numpy_seed, python_seed = struct.unpack("<QII", digest)
    torch.default_generator.manual_seed(torch_seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(torch_seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(torch_seed)
    np.random.seed(numpy_seed)
    random.seed(python_seed)


class BatchReseeding:
    """The reseeding state of one model: its seed, drawn per ``fit``, broadcast, saved and restored.

    :class:`~lit_transfer.TransferClassifier` calls :meth:`start` in ``on_fit_start`` (after a resume's
    :meth:`restore`), :meth:`before_batch` in ``on_train_batch_start``, :meth:`save`/:meth:`restore` with its
    checkpoints (top-level key ``"rng_seed"``, a plain int).

    Example:
        >>> reseeding = BatchReseeding()
        >>> reseeding.restore({"rng_seed": 42})
        >>> checkpoint = {}
        >>> reseeding.save(checkpoint)
        >>> checkpoint
        {'rng_seed': 42}
    """

    KEY = "rng_seed"

    def __init__(self) -> None:
        self.seed: int | None = None

    def start(self, trainer: Any) -> None:
        """Draw a seed for a new ``fit`` (a resumed one keeps its checkpoint's), rank 0's on every rank."""
        if trainer.ckpt_path is None or self.seed is None:
            self.seed = draw_seed()
        self.seed = int(trainer.strategy.broadcast(self.seed, src=0))

    def before_batch(self, epoch: int, batch_idx: int, rank: int) -> None:
        """Reseed the global generators for this batch (nothing before the first :meth:`start`)."""
        if self.seed is not None:
            reseed_for_batch(self.seed, epoch, batch_idx, rank)

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Store the seed in the checkpoint."""
        if self.seed is not None:
            checkpoint[self.KEY] = self.seed

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's seed, when it has one (checkpoints written before this feature do not)."""
        seed = checkpoint.get(self.KEY)
        if is_int(seed):
            self.seed = seed
