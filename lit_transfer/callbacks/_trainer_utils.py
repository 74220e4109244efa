"""Read batch sizes and optimizer facts from a Trainer (the global batch is read, never asked for)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr
from torch import optim

#: Optimizers whose per-coordinate adaptive step makes the square-root LR scaling rule the better default.
ADAPTIVE_OPTIMIZERS: tuple[type[optim.Optimizer], ...] = (
    optim.Adam,
    optim.AdamW,
    optim.Adamax,
    optim.NAdam,
    optim.RAdam,
    optim.Adagrad,
    optim.Adadelta,
    optim.RMSprop,
)


def is_adaptive(optimizer: optim.Optimizer) -> bool:
    """Whether ``optimizer`` is Adam-like (adaptive per-coordinate step sizes).

    torch's adaptive classes are recognised by type; other classes (timm's, third-party ones) by a class name
    containing ``adam``, ``adagrad``, ``adadelta``, ``rmsprop`` or ``lamb``.
    """
    if isinstance(optimizer, ADAPTIVE_OPTIMIZERS):
        return True
    name = type(optimizer).__name__.lower()
    return any(key in name for key in ("adam", "adagrad", "adadelta", "rmsprop", "lamb"))


def loader_batch_size(loader: Any) -> int | None:
    """The batch size of a DataLoader (``batch_size`` or ``batch_sampler.batch_size``), or ``None``."""
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return int(size) if isinstance(size, int) else None


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return _first_loader(loaders[0]) if loaders else None
    return loaders


def per_device_batch_size(trainer: pl.Trainer, batch_size_attr: str = "batch_size") -> int:
    """The per-device training batch size.

    Read from the live train DataLoader when it exists, else from the ``batch_size_attr`` attribute of the
    LightningModule, its hparams or its DataModule.

    Raises:
        AttributeError: If neither source gives a batch size.
    """
    size = loader_batch_size(_first_loader(trainer.train_dataloader))
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


def global_batch_size(
    trainer: pl.Trainer,
    per_device: int | None = None,
    accumulation: int | None = None,
    batch_size_attr: str = "batch_size",
) -> int:
    """Per-device batch x devices x nodes x ``accumulate_grad_batches``, each read from ``trainer``."""
    per_device = per_device_batch_size(trainer, batch_size_attr) if per_device is None else per_device
    accumulation = trainer.accumulate_grad_batches if accumulation is None else accumulation
    return per_device * trainer.world_size * accumulation


def find_callback(trainer: pl.Trainer, kind: type) -> Any | None:
    """The first callback of type ``kind`` among ``trainer.callbacks``, or ``None``."""
    # `Trainer.callbacks` is assigned by Lightning's callback connector, not declared on the class
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)  # type: ignore[attr-defined]


def all_param_group_lrs(trainer: pl.Trainer) -> Iterable[tuple[str, float]]:
    """``(name, lr)`` for every param group of every optimizer; unnamed groups are called ``group{i}``."""
    for opt_idx, optimizer in enumerate(trainer.optimizers):
        prefix = "" if len(trainer.optimizers) == 1 else f"opt{opt_idx}/"
        for i, group in enumerate(optimizer.param_groups):
            yield f"{prefix}{group.get('name', f'group{i}')}", float(group["lr"])
