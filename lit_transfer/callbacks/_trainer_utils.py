"""Deprecated home of the Trainer facts: import them from :mod:`lit_transfer.trainer_facts`.

Kept so that modules written against it keep importing; new code asks :mod:`lit_transfer.trainer_facts`, and the LR
scaling rule lives in :mod:`lit_transfer.batch_lr_scaling`. Delete this module once nothing imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lit_transfer.batch_lr_scaling import ADAPTIVE_OPTIMIZERS, is_adaptive
from lit_transfer.trainer_facts import (
    find_callback,
    global_batch_size,
    loader_batch_size,
    per_device_batch_size,
)

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "all_param_group_lrs",
    "find_callback",
    "global_batch_size",
    "is_adaptive",
    "loader_batch_size",
    "per_device_batch_size",
]


def all_param_group_lrs(trainer: Any) -> Iterator[tuple[str, float]]:
    """``(name, lr)`` of every param group, unnamed groups called ``group{i}`` (the old run-report columns).

    Deprecated: use :func:`lit_transfer.trainer_facts.named_param_groups`, whose unnamed groups are ``pg{i + 1}`` as
    in Lightning's ``LearningRateMonitor``.
    """
    for k, optimizer in enumerate(trainer.optimizers):
        prefix = "" if len(trainer.optimizers) == 1 else f"opt{k}/"
        for i, group in enumerate(optimizer.param_groups):
            yield f"{prefix}{group.get('name', f'group{i}')}", float(group["lr"])
