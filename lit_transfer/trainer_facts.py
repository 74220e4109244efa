"""The one reader of the Trainer: batch sizes, samples, param-group names and callbacks, each read in one place.

The global batch is read, never asked for: per-device batch x devices x nodes x ``accumulate_grad_batches``, every
factor from the Trainer and its train DataLoader (``trainer.world_size`` is devices x nodes). Callbacks, the run
report and the models ask this module instead of re-deriving a fact, so a fact has one definition.

Questions about other callbacks are asked through small protocols (:class:`BatchSchedule`,
:class:`StepLRFactor`, :class:`TrainableGroupCount`): a callback module finds another callback's state without
importing its module.

Example:
    >>> from torch.utils.data import DataLoader
    >>> loader_batch_size(DataLoader(list(range(10)), batch_size=4))
    4
    >>> param_group_name({"params": []}, 0), param_group_name({"params": [], "name": "head"}, 3)
    ('pg1', 'head')
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import lightning.pytorch as pl
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr

from lit_transfer.errors import is_int

__all__ = [
    "BatchSchedule",
    "GlobalBatch",
    "StepLRFactor",
    "TrainableGroupCount",
    "batch_schedule",
    "callbacks_of",
    "find_callback",
    "global_batch",
    "global_batch_size",
    "loader_batch_size",
    "named_param_groups",
    "optimizer_steps_per_epoch",
    "param_group_name",
    "per_device_batch_size",
    "planned_epochs",
    "samples_per_epoch",
    "samples_per_rank",
    "step_lr_factor",
    "train_loader",
    "trainable_group_count",
]

_C = TypeVar("_C")


# --------------------------------------------------------------------------------------------------- protocols
@runtime_checkable
class BatchSchedule(Protocol):
    """A callback that changes the batch size during a fit (e.g. :class:`~lit_transfer.callbacks.BatchSizeRamp`).

    ``initial_batch_size`` and ``initial_accumulation`` are the per-device batch and accumulation of the fit's first
    epoch (``None`` before its ``setup``); ``lr_coupling`` is ``"scale"`` when the schedule rescales the LR itself.
    """

    initial_batch_size: int | None
    initial_accumulation: int | None
    lr_coupling: str


@runtime_checkable
class StepLRFactor(Protocol):
    """A callback that multiplies every LR only while ``optimizer.step`` runs (e.g. LRScaling's warmup)."""

    def warmup_factor(self, step: int) -> float:
        """The multiplier the optimizer step ``step`` (0-based) applies; 1 when none."""
        ...


@runtime_checkable
class TrainableGroupCount(Protocol):
    """A callback that knows how many layer groups, counted from the head, train now (e.g. LayerFreezing)."""

    trainable_groups: int | None


# ----------------------------------------------------------------------------------------------------- loaders
def train_loader(trainer: pl.Trainer) -> Any:
    """The (first) train DataLoader of ``trainer``, or ``None`` before it is built.

    With several train loaders (a list, tuple or dict of them) the first one is the loader whose batch counts.
    """
    loaders: Any = trainer.train_dataloader
    while isinstance(loaders, (dict, list, tuple)):
        values = list(loaders.values()) if isinstance(loaders, dict) else list(loaders)
        loaders = values[0] if values else None
    return loaders


def loader_batch_size(loader: Any) -> int | None:
    """The batch size of a DataLoader (``batch_size``, else ``batch_sampler.batch_size``), or ``None``."""
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return int(size) if is_int(size) else None


def samples_per_rank(trainer: pl.Trainer) -> int | None:
    """Training samples one rank draws per epoch: the train sampler's length, else its dataset's.

    Returns:
        The count, or ``None`` when the train DataLoader is not built yet or has no length (an iterable dataset).
    """
    loader = train_loader(trainer)
    for source in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        try:
            return len(source)  # type: ignore[arg-type]
        except TypeError:
            continue
    return None


def samples_per_epoch(trainer: pl.Trainer) -> int | None:
    """Training samples one epoch draws over all ranks (:func:`samples_per_rank` x world size), or ``None``."""
    samples = samples_per_rank(trainer)
    return None if samples is None else samples * trainer.world_size


def optimizer_steps_per_epoch(trainer: pl.Trainer) -> int:
    """Optimizer steps of one epoch: ``ceil(num_training_batches / accumulate_grad_batches)``.

    Builds the train DataLoader first when the Trainer has not yet (from ``configure_optimizers``, for example).

    Raises:
        ValueError: For a train DataLoader without a length (an iterable dataset): an epoch has no known length.
    """
    if train_loader(trainer) is None:
        trainer.fit_loop.setup_data()  # Lightning sizes the epoch here; `max_steps` runs skip it until `fit` starts
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError(
            "An epoch of this train DataLoader has no known length (an iterable dataset without `__len__`), so a"
            " schedule given in epochs cannot be turned into optimizer steps. Use a map-style dataset, or give the"
            " schedule in steps (e.g. your own `lr_scheduler` stepped every step)."
        )
    return math.ceil(batches / trainer.accumulate_grad_batches)


def planned_epochs(trainer: pl.Trainer) -> int | None:
    """The number of epochs the fit is bounded by: ``max_epochs`` when set, else ``None`` (``max_steps`` or time)."""
    epochs = trainer.max_epochs
    return int(epochs) if epochs is not None and epochs >= 0 else None


# ------------------------------------------------------------------------------------------------ global batch
def per_device_batch_size(trainer: pl.Trainer, batch_size_attr: str = "batch_size") -> int:
    """The per-device training batch size.

    Read from the live train DataLoader when it exists, else from the ``batch_size_attr`` attribute of the
    LightningModule, its hparams or its DataModule.

    Raises:
        AttributeError: If neither source gives a batch size.
    """
    size = loader_batch_size(train_loader(trainer))
    if size is not None:
        return size
    module = trainer.lightning_module
    if lightning_hasattr(module, batch_size_attr):
        value = lightning_getattr(module, batch_size_attr)
        if isinstance(value, int):
            return value
    raise AttributeError(
        f"Cannot read the per-device batch size: the train DataLoader is not built yet and neither the"
        f" LightningModule nor its DataModule has an int attribute `{batch_size_attr}`. Either add that attribute"
        f" or pass `batch_size_attr=` naming the one you use."
    )


@dataclass(frozen=True)
class GlobalBatch:
    """The samples one optimizer step averages over all ranks, with its factors.

    Example:
        >>> batch = GlobalBatch(per_device=16, world_size=2, accumulation=4)
        >>> batch.size
        128
        >>> str(batch)
        '128 (`batch_size` 16 x 2 device(s) x `accumulate_grad_batches` 4)'
    """

    per_device: int
    world_size: int
    accumulation: int

    @property
    def size(self) -> int:
        """Per-device batch x world size (devices x nodes) x accumulation."""
        return self.per_device * self.world_size * self.accumulation

    def __str__(self) -> str:
        return (
            f"{self.size} (`batch_size` {self.per_device} x {self.world_size} device(s) x `accumulate_grad_batches`"
            f" {self.accumulation})"
        )


def global_batch(
    trainer: pl.Trainer,
    per_device: int | None = None,
    accumulation: int | None = None,
    batch_size_attr: str = "batch_size",
) -> GlobalBatch:
    """The global batch of ``trainer``; ``per_device`` and ``accumulation`` override the live values.

    Args:
        trainer: The Trainer whose world size (devices x nodes) counts.
        per_device: A per-device batch (e.g. a batch schedule's initial one); ``None`` reads the live one
            (:func:`per_device_batch_size`).
        accumulation: An accumulation (``None``: ``trainer.accumulate_grad_batches``).
        batch_size_attr: See :func:`per_device_batch_size`.
    """
    return GlobalBatch(
        per_device=per_device_batch_size(trainer, batch_size_attr) if per_device is None else per_device,
        world_size=trainer.world_size,
        accumulation=trainer.accumulate_grad_batches if accumulation is None else accumulation,
    )


def global_batch_size(
    trainer: pl.Trainer,
    per_device: int | None = None,
    accumulation: int | None = None,
    batch_size_attr: str = "batch_size",
) -> int:
    """Per-device batch x devices x nodes x ``accumulate_grad_batches`` (:func:`global_batch`'s ``size``)."""
    return global_batch(trainer, per_device, accumulation, batch_size_attr).size


# ------------------------------------------------------------------------------------------------ param groups
def param_group_name(group: dict[str, Any], index: int) -> str:
    """A param group's ``name``, else ``pg{index + 1}``: the name Lightning's ``LearningRateMonitor`` logs."""
    return str(group.get("name", f"pg{index + 1}"))


def named_param_groups(trainer: pl.Trainer) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, group)`` for every param group of every optimizer of ``trainer``.

    Names come from :func:`param_group_name`; with several optimizers they are prefixed ``opt{k}/``.
    """
    optimizers = trainer.optimizers
    for k, optimizer in enumerate(optimizers):
        prefix = "" if len(optimizers) == 1 else f"opt{k}/"
        for i, group in enumerate(optimizer.param_groups):
            yield f"{prefix}{param_group_name(group, i)}", group


# --------------------------------------------------------------------------------------------------- callbacks
def callbacks_of(trainer: pl.Trainer) -> list[pl.Callback]:
    """``trainer.callbacks`` (assigned by Lightning's callback connector, not declared on the class)."""
    return list(getattr(trainer, "callbacks", None) or [])


def find_callback(trainer: pl.Trainer, kind: type[_C]) -> _C | None:
    """The first callback of ``trainer`` that is an instance of ``kind`` (a class or runtime protocol), or ``None``."""
    return next((cb for cb in callbacks_of(trainer) if isinstance(cb, kind)), None)


def batch_schedule(trainer: pl.Trainer) -> BatchSchedule | None:
    """The first callback of ``trainer`` that changes the batch size (a :class:`BatchSchedule`), or ``None``."""
    return find_callback(trainer, BatchSchedule)  # type: ignore[type-abstract]  # a runtime-checkable protocol


def step_lr_factor(trainer: pl.Trainer) -> float:
    """The multiplier the coming optimizer step applies on top of ``group["lr"]`` (e.g. warmup), else 1.

    Read it *outside* ``optimizer.step`` (e.g. in ``on_train_batch_start``): such a factor is applied by an optimizer
    step pre-hook, which runs before Lightning's closure, so inside the step (``on_before_optimizer_step``,
    ``on_after_backward``) ``group["lr"]`` already includes it and is the LR the step uses.
    """
    factor = 1.0
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, StepLRFactor):
            factor *= callback.warmup_factor(trainer.global_step)
    return factor


def trainable_group_count(trainer: pl.Trainer) -> int | None:
    """How many layer groups train now, from the first callback that tracks it, or ``None``."""
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, TrainableGroupCount) and callback.trainable_groups is not None:
            return int(callback.trainable_groups)
    return None
