"""``TrialBench``: short trial fine-tunes of candidate plans on the run's own module, leaving no trace.

The trials train the run's module in place (no copy of the model), with a private optimizer of the run's
optimizer class, hyper-parameters and state. Each trial is the run in miniature: from the base learning rates
(``initial_lr``, what the schedule rises to) times the candidate's per-group multipliers, the rates follow a cosine
to zero over the trial's steps, so a candidate is scored after it has settled, as the run's own schedule lets it
settle, not in the middle of its largest steps. What the trials change is put back when the bench closes:

* every parameter's and buffer's value (BatchNorm statistics included), every ``.grad``, ``requires_grad`` flag
  and module mode;
* the random generators (the trials run inside :func:`lit_transfer.training_state.seeded_rng`);
* the run's optimizer, its schedulers and the DDP wrapper are not touched: gradients come from
  ``torch.autograd.grad`` on the unwrapped module, so no DDP hook or gradient exchange runs.

A candidate trained in an earlier round of successive halving continues from its own saved weights and optimizer
state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.nn.modules.batchnorm import _BatchNorm

from lit_transfer.freezing.layer_groups import LayerGroup, set_trainable
from lit_transfer.freezing.trial_data import (
    TrainStream,
    ValidationSet,
    batch_loss,
    inputs_targets,
    per_sample_losses,
)
from lit_transfer.freezing.trials import Candidate
from lit_transfer.training_state import kept_training_state, set_frozen_modes

__all__ = ["TrialBench"]


class TrialBench:
    """Run candidates' trials on a live run; :meth:`close` restores the run exactly.

    Args:
        trainer: The Trainer of the run (its optimizer, precision and data).
        pl_module: The module (trained in place during the trials).
        groups: The layer groups, the head last.
        val: The validation samples the trials are scored on.
        seed: Seed of the training batches.
        train_bn: Whether BatchNorm layers of frozen groups train (the policy's ``train_bn``).
    """

    def __init__(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        groups: Sequence[LayerGroup],
        val: ValidationSet,
        seed: int,
        train_bn: bool = False,
    ) -> None:
        if len(trainer.optimizers) != 1:
            raise ValueError(f"the trials follow one optimizer; the run has {len(trainer.optimizers)}")
        self.trainer, self.module, self.groups, self.val, self.train_bn = trainer, pl_module, groups, val, train_bn
        self.stream = TrainStream(trainer, seed)
        self.val_batches = val.batches()  # no augmentation: collated once, scored for every candidate
        self.optimizer = trainer.optimizers[0]
        self.start = _clone_state(pl_module)
        self.grads = [(p, p.grad) for p in pl_module.parameters()]
        self.saved: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any], int]] = {}
        self.owner = {id(p): index for index, group in enumerate(groups) for p in group.params}
        self.precision = trainer.precision_plugin

    def run(self, candidate: Candidate, steps: int) -> torch.Tensor:
        """Train ``candidate`` ``steps`` more optimizer steps; its per-sample validation losses."""
        weights, opt_state, done = self.saved.get(candidate.name, (self.start, self.optimizer.state_dict(), 0))
        self.module.load_state_dict(weights)
        optimizer = self._optimizer(candidate, opt_state)
        with kept_training_state(self.module):
            frozen = set_trainable(self.module, self.groups, candidate.mask, self.train_bn)
            self.module.train()
            set_frozen_modes(self.module, frozen, self.train_bn)
            trained = [p for p in self.module.parameters() if p.requires_grad]
            peaks = [group["lr"] for group in optimizer.param_groups]
            for k, index in enumerate(range(done, done + steps)):
                for group, peak in zip(optimizer.param_groups, peaks):
                    group["lr"] = peak * 0.5 * (1.0 + math.cos(math.pi * k / steps))  # a run in miniature
                self._step(optimizer, trained, self.stream.batch(index))
            self._recalibrate_batchnorm(range(done, done + steps))
            self.module.eval()
            with torch.no_grad(), self.precision.forward_context():
                losses = torch.cat([per_sample_losses(self.module, batch) for batch in self.val_batches])
        self.saved[candidate.name] = (_clone_state(self.module), copy.deepcopy(optimizer.state_dict()), done + steps)
        return losses.detach().cpu()

    def close(self) -> None:
        """Put back the run's weights, buffers and gradients (flags and modes are kept by each trial)."""
        self.module.load_state_dict(self.start)
        for param, grad in self.grads:
            param.grad = grad
        self.saved.clear()

    def _optimizer(self, candidate: Candidate, state: dict[str, Any]) -> torch.optim.Optimizer:
        """A private optimizer over the module's parameters: the run's class, hyper-parameters and state."""
        groups = [{**g, "params": list(g["params"])} for g in self.optimizer.param_groups]
        optimizer = type(self.optimizer)(groups)  # type: ignore[call-arg]
        optimizer.load_state_dict(copy.deepcopy(state))
        for group in optimizer.param_groups:
            owners = {self.owner[id(p)] for p in group["params"] if id(p) in self.owner}
            mult = candidate.lr_mults[owners.pop()] if len(owners) == 1 else 1.0
            group["lr"] = float(group.get("initial_lr", group["lr"])) * mult
        return optimizer

    def _recalibrate_batchnorm(self, indices: range) -> None:
        """Re-estimate the running statistics of the BatchNorm layers in train mode on the trial's batches.

        A few steps move running averages (momentum 0.1) only part of the way to the statistics of the features
        the trial produced, so a candidate that trains BatchNorm layers would be scored with stale statistics, a
        penalty the full run does not pay. Each such layer gets the cumulative average over the trial's batches
        (as ``torch.optim.swa_utils.update_bn`` does); the bench restores the run's statistics when it closes.
        """
        layers = [m for m in self.module.modules() if isinstance(m, _BatchNorm) and m.training]
        if not layers:
            return
        momenta = [m.momentum for m in layers]
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        try:
            with torch.no_grad(), self.precision.forward_context():
                for index in indices:
                    inputs, _ = inputs_targets(self.module, self.stream.batch(index))
                    self.module(inputs)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    def _step(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], batch: Any) -> None:
        with torch.enable_grad(), self.precision.forward_context():
            loss = batch_loss(self.module, batch)
        grads = torch.autograd.grad(loss.float(), params, allow_unused=True)
        if not all(g is None or bool(torch.isfinite(g).all()) for g in grads):
            return  # an overflow under mixed precision: skip the step, as a GradScaler would
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        for param in params:
            param.grad = None


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}
