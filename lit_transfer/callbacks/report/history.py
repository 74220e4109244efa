"""What :class:`~lit_transfer.callbacks.RunReport` records: a row per optimizer step, a row per epoch, test metrics.

Rows are dictionaries of plain values (ints, floats, strings), so they go into checkpoints and CSV files as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lit_transfer.callbacks.report.confusion import split_batch
from lit_transfer.errors import is_number
from lit_transfer.trainer_facts import (
    global_batch_size,
    loader_batch_size,
    named_param_groups,
    train_loader,
    trainable_group_count,
)

__all__ = ["RunHistory", "learning_rates", "logged_metrics", "scalar"]


def scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number or a one-element tensor, else ``None`` (booleans too).

    Example:
        >>> scalar(torch.tensor([0.5])), scalar(3), scalar(torch.zeros(2)), scalar(True), scalar("a")
        (0.5, 3.0, None, None, None)
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if not is_number(value):
        return None
    return float(value)


def logged_metrics(trainer: Trainer) -> dict[str, float]:
    """Every scalar of ``trainer.callback_metrics``: ``*_step`` values left out, the ``_epoch`` suffix dropped."""
    metrics: dict[str, float] = {}
    for key, value in trainer.callback_metrics.items():
        number = scalar(value)
        if number is not None and not key.endswith("_step"):
            metrics[key.removesuffix("_epoch")] = number
    return metrics


def learning_rates(trainer: Trainer) -> dict[str, float]:
    """``lr/<group name>`` of every param group as the step being taken uses it.

    Read inside ``optimizer.step`` (``on_before_optimizer_step``), where ``group["lr"]`` already includes a warmup
    factor such as :class:`~lit_transfer.callbacks.LRScaling`'s (applied by an optimizer-step pre-hook). Groups are
    named as :func:`~lit_transfer.trainer_facts.named_param_groups` names them (their ``name`` key, else Lightning's
    ``pg<i+1>``); a ``<name>.no_decay`` group at the same LR as ``<name>`` is folded into it.
    """
    lrs: dict[str, float] = {}
    for name, group in named_param_groups(trainer):
        lr = float(group["lr"])
        base = name.removesuffix(".no_decay")
        if base != name and math.isclose(lrs.get(f"lr/{base}", math.nan), lr):
            continue
        key = f"lr/{name}"
        while key in lrs:
            key += "'"
        lrs[key] = lr
    return lrs


def _global_batch(trainer: Trainer, samples: int) -> int:
    """The nominal global batch of this step (loader batch x accumulation x world size), else samples seen."""
    size = loader_batch_size(train_loader(trainer))
    if size is not None and size > 0:
        return global_batch_size(trainer, per_device=size)
    return samples * trainer.world_size


def _batch_len(batch: Any) -> int:
    x, _ = split_batch(batch)
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return int(x.shape[0])
    return len(x) if isinstance(x, Sequence) else 0


class RunHistory:
    """The rows of one run.

    Attributes:
        steps: One row per optimizer step: ``step``, ``epoch``, ``lr/<group>``..., ``batch_size`` (global),
            ``trainable_params``, ``trainable_groups`` (with a :class:`~lit_transfer.callbacks.LayerFreezing`),
            ``optimizer``.
        epochs: One row per training epoch: ``stage="fit"``, ``epoch``, ``step`` and every logged scalar (validation
            values in epochs that validated).
        test_metrics: The ``test*`` scalars of the last ``test`` run.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.test_metrics: dict[str, float] = {}
        self._pending_val: dict[str, float] = {}
        self._samples = 0
        self._last_step = -1
        self._trainable_count: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the fit history (a new ``fit``; a resumed one gets it back from :meth:`load_state_dict`)."""
        self.epochs, self.steps, self._pending_val = [], [], {}
        self._samples, self._last_step, self._trainable_count = 0, -1, None

    def count_batch(self, batch: Any) -> None:
        """Add a training batch's samples (the global batch of a loader without a batch size)."""
        self._samples += _batch_len(batch)

    def record_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        """Append the row of the optimizer step about to run (one row when several optimizers step together)."""
        step = trainer.global_step
        if step == self._last_step:
            return
        self._last_step = step
        row: dict[str, Any] = {"step": step, "epoch": trainer.current_epoch}
        row.update(learning_rates(trainer))
        row["batch_size"] = _global_batch(trainer, self._samples)
        self._samples = 0
        if self._trainable_count is None or self._trainable_count[0] != trainer.current_epoch:
            # counted at the first step of each epoch, after every epoch-start hook (freezing phases) has run
            count = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
            self._trainable_count = (trainer.current_epoch, count)
        row["trainable_params"] = self._trainable_count[1]
        groups = trainable_group_count(trainer)
        if groups is not None:
            row["trainable_groups"] = groups
        row["optimizer"] = "+".join(type(opt).__name__ for opt in trainer.optimizers) or type(optimizer).__name__
        self.steps.append(row)

    def record_validation(self, trainer: Trainer) -> None:
        """Keep the ``val*`` scalars for the row of the current training epoch."""
        self._pending_val = {k: v for k, v in logged_metrics(trainer).items() if k.startswith("val")}

    def record_epoch(self, trainer: Trainer) -> None:
        """Append the row of the training epoch that ends (with its validation values, if any)."""
        metrics = {k: v for k, v in logged_metrics(trainer).items() if not k.startswith(("val", "test"))}
        row = {"stage": "fit", "epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        row.update(self._pending_val)
        self._pending_val = {}
        self.epochs.append(row)

    def record_test(self, trainer: Trainer) -> None:
        """Keep the ``test*`` scalars of the test run that ends."""
        self.test_metrics = {k: v for k, v in logged_metrics(trainer).items() if k.startswith("test")}

    def metric_rows(self) -> list[dict[str, Any]]:
        """The epoch rows, then a ``stage="test"`` row (with the last epoch and step) when a test ran.

        Example:
            >>> history = RunHistory()
            >>> history.epochs = [{"stage": "fit", "epoch": 0, "step": 5, "train_loss": 0.5}]
            >>> history.test_metrics = {"test_acc": 0.75}
            >>> history.metric_rows()[-1]
            {'stage': 'test', 'epoch': 0, 'step': 5, 'test_acc': 0.75}
        """
        rows = list(self.epochs)
        if self.test_metrics:
            last = self.epochs[-1] if self.epochs else {}
            rows.append(
                {"stage": "test", "epoch": last.get("epoch", ""), "step": last.get("step", ""), **self.test_metrics}
            )
        return rows

    def state_dict(self) -> dict[str, Any]:
        """The step and epoch rows (plain values)."""
        return {"epochs": [dict(r) for r in self.epochs], "steps": [dict(r) for r in self.steps]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the rows of :meth:`state_dict`; the next recorded step follows the last restored one."""
        self.epochs = [dict(r) for r in state_dict.get("epochs", [])]
        self.steps = [dict(r) for r in state_dict.get("steps", [])]
        self._last_step = self.steps[-1]["step"] if self.steps else -1
