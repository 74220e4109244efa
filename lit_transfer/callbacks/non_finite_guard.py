"""NonFiniteLossGuard: stop a run at the first NaN/inf loss, before it reaches the weights."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_transfer.trainer_facts import named_param_groups

__all__ = ["NonFiniteLossGuard"]


class NonFiniteLossGuard(Callback):
    """Raise a ``FloatingPointError`` naming the step, the learning rates and the precision when the loss is NaN/inf.

    The check runs before ``backward``, so the optimizer never applies the faulty step: an
    ``OnExceptionCheckpoint`` (a default of the ``lit-transfer`` CLI) then saves the last good weights, and the
    regular checkpoints stay untouched. Gradient overflow that a ``16-mixed`` GradScaler handles (a skipped step,
    a smaller scale) is not a fault and is not reported: only the loss itself is checked.

    Example:
        >>> NonFiniteLossGuard()
        NonFiniteLossGuard()
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        lrs = ", ".join(f"{name}={group['lr']:.3g}" for name, group in named_param_groups(trainer))
        raise FloatingPointError(
            f"The training loss is {loss.item()} at global step {trainer.global_step} (epoch {trainer.current_epoch},"
            f" precision {trainer.precision!r}); the step was not applied. Learning rates: {lrs}. Lower the learning"
            " rate or add warmup, use `gradient_clip_val`, or prefer `bf16-mixed` over `16-mixed`; then resume from"
            " the last checkpoint (`--ckpt_path last`)."
        )
