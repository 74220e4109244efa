"""The data :class:`~lit_transfer.freezing.AutoFreeze`'s trials train and are scored on, drawn without side effects.

* **Training batches** come from a private copy of the training dataset (its own augmentation pipeline), batch
  ``k`` drawn under seed ``(seed, k)``: every candidate sees the same batches, whatever order the trials run in,
  and the training pipeline's own generators do not move.
* **Validation samples** are those of the run's validation DataLoader (or the DataModule's), a seeded subset when
  there are more than the policy scores on; the loss is the module's own evaluation loss, per sample, so that two
  candidates can be compared sample by sample.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torch.utils.data import default_collate

from lit_transfer.errors import is_int
from lit_transfer.trainer_facts import loader_batch_size, train_loader
from lit_transfer.training_state import seeded_rng

__all__ = [
    "TrainStream",
    "ValidationSet",
    "check_measurable",
    "per_sample_losses",
    "samples_per_class",
    "validation_set",
]


def _map_style(dataset: Any) -> bool:
    return dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def check_measurable(trainer: Trainer) -> Any:
    """The training dataset, checked to be map-style (AutoFreeze draws seeded batches of it).

    Raises:
        ValueError: Naming the dataset type and the fix.
    """
    dataset = getattr(train_loader(trainer), "dataset", None)
    if not _map_style(dataset):
        raise ValueError(
            "AutoFreeze runs short trial fine-tunes on seeded batches of the training dataset and needs a map-style"
            f" dataset (with `__len__` and `__getitem__`); the train DataLoader has {type(dataset).__name__}. Use"
            " another `freeze` policy with an iterable dataset."
        )
    return dataset


def samples_per_class(trainer: Trainer, pl_module: LightningModule) -> float:
    """Training samples per class: the training dataset's length over the number of classes.

    The classes are the DataModule's or the module's ``num_classes`` (its hyper-parameter), else the distinct
    ``labels`` of the dataset, else 1 (a regression counts its samples).
    """
    dataset = getattr(train_loader(trainer), "dataset", None)
    size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
    classes = getattr(getattr(trainer, "datamodule", None), "num_classes", None)
    if not is_int(classes):
        classes = getattr(pl_module, "hparams", {}).get("num_classes")
    if not is_int(classes):
        labels = getattr(dataset, "labels", None)
        classes = len(set(labels)) if labels else 1
    return size / max(1, classes)


def _private_copy(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` (and of the datasets it wraps) with its own augmentation pipeline."""
    dataset = copy.copy(dataset)
    if hasattr(dataset, "transform"):
        dataset.transform = copy.deepcopy(dataset.transform)
    inner = getattr(dataset, "dataset", None)
    if _map_style(inner):  # torch's Subset and similar wrappers
        dataset.dataset = _private_copy(inner)
    return dataset


def _reseed(dataset: Any, seed: int) -> None:
    """Reseed the augmentation pipelines of ``dataset`` and of the datasets it wraps (``seed_transform``)."""
    while dataset is not None:
        reseed = getattr(dataset, "seed_transform", None)
        if callable(reseed):
            reseed(seed)
        dataset = getattr(dataset, "dataset", None)


class TrainStream:
    """Seeded training batches: batch ``k`` is a function of ``(seed, k)`` alone.

    Epochs of the stream are seeded permutations of the training dataset, cut into batches of the train DataLoader's
    size (the last, short one dropped when the dataset holds more than one batch), collated as it collates.
    """

    def __init__(self, trainer: Trainer, seed: int) -> None:
        loader = train_loader(trainer)
        self.dataset = _private_copy(check_measurable(trainer))
        self.batch_size = min(loader_batch_size(loader) or 32, len(self.dataset))
        self.collate = getattr(loader, "collate_fn", None) or default_collate
        self.per_epoch = max(1, len(self.dataset) // self.batch_size)
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def batch(self, index: int) -> Any:
        """Batch ``index`` of the stream (drawn inside its own seeded generators)."""
        epoch, position = divmod(index, self.per_epoch)
        seed = self.seed * 1_000_003 + index
        picked = self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        with seeded_rng(seed):
            _reseed(self.dataset, seed)
            return self.collate([self.dataset[i] for i in picked])

    def _order(self, epoch: int) -> list[int]:
        """The seeded permutation of the dataset for ``epoch`` of the stream (drawn once per epoch)."""
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._orders[epoch] = torch.randperm(len(self.dataset), generator=generator).tolist()
        return self._orders[epoch]


@dataclass
class ValidationSet:
    """The validation samples the trials are scored on.

    Attributes:
        dataset: The validation dataset.
        indices: The scored samples (all, or a seeded subset).
        batch_size: Samples per forward pass.
        collate: The validation DataLoader's collate function.
    """

    dataset: Any
    indices: list[int]
    batch_size: int
    collate: Any

    @property
    def size(self) -> int:
        """Samples scored."""
        return len(self.indices)

    def batches(self) -> list[Any]:
        """The scored samples, collated in batches."""
        step = self.batch_size
        return [self.collate([self.dataset[i] for i in self.indices[s : s + step]]) for s in range(0, self.size, step)]


def validation_set(trainer: Trainer, max_samples: int, seed: int) -> ValidationSet | None:
    """The run's validation data (the Trainer's loader, else the DataModule's), at most ``max_samples`` of it.

    Returns:
        ``None`` when there is no map-style validation dataset.
    """
    loader: Any = trainer.val_dataloaders
    datamodule = getattr(trainer, "datamodule", None)
    if loader is None and datamodule is not None and is_overridden("val_dataloader", datamodule):
        try:
            loader = datamodule.val_dataloader()
        except Exception:  # a DataModule without a validation split says so by raising
            loader = None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    dataset: Any = getattr(loader, "dataset", None)
    if not _map_style(dataset) or len(dataset) == 0:
        return None
    indices = list(range(len(dataset)))
    if len(indices) > max_samples:
        indices = sorted(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_samples])
        indices = [int(i) for i in indices]
    batch_size = loader_batch_size(loader) or 32
    return ValidationSet(dataset, indices, batch_size, getattr(loader, "collate_fn", None) or default_collate)


def _loss(pl_module: LightningModule, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The module's own evaluation loss, else cross-entropy for class indices, BCE for 0/1 targets, else MSE.

    The module's loss is its ``loss(outputs, targets_for_loss(targets, 0), "val")`` (lit_transfer's models: the
    task's loss without label smoothing or ``pos_weight``), else its ``eval_loss(outputs, targets)``.
    """
    loss, shape_targets = getattr(pl_module, "loss", None), getattr(pl_module, "targets_for_loss", None)
    if callable(loss) and callable(shape_targets):
        return loss(outputs, shape_targets(targets, 0), "val")  # type: ignore[no-any-return]
    loss_fn = getattr(pl_module, "eval_loss", None)
    if callable(loss_fn):
        return loss_fn(outputs, targets)  # type: ignore[no-any-return]
    if not targets.is_floating_point():
        return nn.functional.cross_entropy(outputs, targets)
    targets = targets.reshape(outputs.shape).to(outputs.dtype)
    if bool(((targets == 0) | (targets == 1)).all()):
        return nn.functional.binary_cross_entropy_with_logits(outputs, targets)
    return nn.functional.mse_loss(outputs, targets)


def batch_loss(pl_module: LightningModule, batch: Any) -> torch.Tensor:
    """The training loss of one ``(inputs, targets, ...)`` batch on the module's device (see :func:`_loss`)."""
    inputs, targets = inputs_targets(pl_module, batch)
    return _loss(pl_module, pl_module(inputs), targets)


def per_sample_losses(pl_module: LightningModule, batch: Any) -> torch.Tensor:
    """The evaluation loss of each sample of one ``(inputs, targets, ...)`` batch (no gradient)."""
    inputs, targets = inputs_targets(pl_module, batch)
    outputs = pl_module(inputs)
    return torch.stack([_loss(pl_module, outputs[i : i + 1], targets[i : i + 1]).float() for i in range(len(outputs))])


def inputs_targets(pl_module: LightningModule, batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a ``(inputs, targets, ...)`` batch on the module's device.

    Raises:
        ValueError: When the batch is not such a tuple (a dict, a bare tensor), naming the fix.
    """
    from lightning.fabric.utilities.apply_func import move_data_to_device

    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise ValueError(
            "AutoFreeze trains and scores its trials on batches of the form (inputs, targets, ...); the DataLoader"
            f" gives {type(batch).__name__}. Use another `freeze` policy, or a collate_fn that returns"
            " (inputs, targets)."
        )
    return move_data_to_device((batch[0], batch[1]), pl_module.device)  # type: ignore[no-any-return]
