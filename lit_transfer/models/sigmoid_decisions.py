"""The state only sigmoid outputs have: decision thresholds, their F1 tuner and the positives' loss weight.

A multi-label or binary :class:`~lit_transfer.TransferClassifier` composes one :class:`SigmoidDecisions`, as every
model composes its :class:`~lit_transfer.models.trained_preprocessing.TrainedPreprocessing`.

Neither the thresholds nor ``pos_weight`` is a buffer of the model: they are decisions about the weights, not
weights. The thresholds are tuned on the predictions of the weights the validation ran with, and saved in each
checkpoint under the top-level key ``"decision_thresholds"`` (a list of floats), beside the weights they were tuned
with. Lightning's weight averaging (``EMAWeightAveraging``, ``WeightAveraging``) averages every parameter and buffer
and validates with the averaged weights: as buffers, the thresholds tuned on the averaged weights' predictions would
be averaged again with stale ones, and a ``pos_weight`` set at the start of ``fit`` would add a buffer its averaged
copy lacks. Checkpoints that still hold ``decision_thresholds`` in their ``state_dict`` load as before.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

from lit_transfer.models.targets import dense_targets
from lit_transfer.models.thresholds import ThresholdTuner, TuneMode

__all__ = ["CHECKPOINT_KEY", "SigmoidDecisions", "label_frequencies", "tunes_now"]

CHECKPOINT_KEY = "decision_thresholds"
"""The checkpoint's top-level key of the thresholds (and their ``state_dict`` key in older checkpoints)."""


class SigmoidDecisions:
    """Decision thresholds, their tuning on validation and the positives' weight of one sigmoid model.

    Args:
        width: Sigmoid outputs (labels; 1 for binary).
        threshold: The starting threshold (kept by labels without positives in the validation data).
        tune: ``"per_label"``, ``"global"`` or ``"none"`` (see :mod:`lit_transfer.models.thresholds`).
        pos_weight: A list (one per output), ``"auto"`` (set by :meth:`weigh_positives`) or ``None``.

    Attributes:
        thresholds: The thresholds ``(width,)``, float32.
        pos_weight: The positives' weight in the training loss ``(width,)``, or ``None``.

    Example:
        >>> decisions = SigmoidDecisions(width=2, threshold=0.5, tune="none", pos_weight=None)
        >>> decisions.decide(torch.tensor([[0.7, 0.2]])).tolist()
        [[True, False]]
        >>> checkpoint = {}
        >>> decisions.save(checkpoint)
        >>> checkpoint
        {'decision_thresholds': [0.5, 0.5]}
    """

    def __init__(self, width: int, threshold: float, tune: TuneMode, pos_weight: Any) -> None:
        self.width = width
        self.pos_weight: torch.Tensor | None = (
            torch.tensor(pos_weight, dtype=torch.float32) if isinstance(pos_weight, (list, tuple)) else None
        )
        self.thresholds = torch.full((width,), float(threshold))
        self.tuner = ThresholdTuner(width, tune, float(threshold)) if tune != "none" else None
        self.auto_weight = pos_weight == "auto"

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """0/1 decisions: a probability at least its output's threshold is positive."""
        if self.thresholds.device != probs.device:
            self.thresholds = self.thresholds.to(probs.device)
        return probs >= self.thresholds

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, train: bool) -> torch.Tensor:
        """BCE with logits; training weighs the positives by ``pos_weight``, evaluation does not."""
        if self.pos_weight is not None and self.pos_weight.device != outputs.device:
            self.pos_weight = self.pos_weight.to(outputs.device)  # once, as a buffer would move with the model
        weight = self.pos_weight if train else None
        return nn.functional.binary_cross_entropy_with_logits(outputs.float(), targets, pos_weight=weight)

    def start_validation(self) -> None:
        """Start a fresh collection of the validation predictions that tune the thresholds."""
        if self.tuner is not None:
            self.tuner.reset()

    def observe(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a validation batch to the tuner (during ``fit`` only: see :func:`tunes_now`)."""
        if self.tuner is not None:
            self.tuner.update(probs, targets)

    def finish_validation(self) -> None:
        """Set the thresholds that maximise F1 on the validation just ended (the same on every DDP rank)."""
        if self.tuner is None:
            return
        tuned = torch.tensor(self.tuner.compute(), dtype=torch.float32)
        self.thresholds = tuned.to(self.thresholds.device)
        self.tuner.reset()

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Store the thresholds under the checkpoint's top-level ``"decision_thresholds"`` (plain floats)."""
        checkpoint[CHECKPOINT_KEY] = [float(t) for t in self.thresholds.tolist()]

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's thresholds: its top-level key, or the ``state_dict`` entry of older checkpoints.

        The older entry is removed from ``state_dict`` (and from the ``current_model_state`` of Lightning's weight
        averaging), so that the weights load strictly. A checkpoint without thresholds keeps the current ones.
        """
        legacy = [
            state.pop(CHECKPOINT_KEY)
            for state in (checkpoint.get("state_dict"), checkpoint.get("current_model_state"))
            if isinstance(state, dict) and CHECKPOINT_KEY in state
        ]
        saved = checkpoint.get(CHECKPOINT_KEY, legacy[0] if legacy else None)
        if saved is None:
            return
        self.thresholds = torch.as_tensor(saved, dtype=torch.float32).reshape(-1).cpu()

    def weigh_positives(self, model: LightningModule, task: str) -> None:
        """With ``pos_weight="auto"``: ``(1 - f) / f`` per output, ``f`` its frequency among the training rows."""
        if not self.auto_weight:
            return
        frequencies = label_frequencies(model, task, self.width)
        ratio = (1.0 - frequencies) / frequencies
        # a label always or never present carries no imbalance to correct: weight 1
        self.pos_weight = torch.where((frequencies > 0) & (frequencies < 1), ratio, torch.ones_like(ratio))


def tunes_now(model: LightningModule) -> bool:
    """Whether validation predictions tune the thresholds now: during ``fit``, not in the sanity check."""
    trainer = model._trainer
    return trainer is not None and trainer.state.fn == "fit" and not trainer.sanity_checking


def label_frequencies(model: LightningModule, task: str, width: int) -> torch.Tensor:
    """Each label's frequency among the training rows: the DataModule's ``label_frequencies``, or counted.

    Counting reads the Trainer's training DataLoader once (with the generators isolated, so the run draws what it
    would have drawn) and sums the counts across DDP ranks.
    """
    trainer = model.trainer
    given = getattr(getattr(trainer, "datamodule", None), "label_frequencies", None)
    if task == "multilabel" and isinstance(given, (list, tuple)) and len(given) == width:
        return torch.tensor([float(f) for f in given], device=model.device)
    positives = torch.zeros(width, dtype=torch.float64, device=model.device)
    rows = torch.zeros((), dtype=torch.float64, device=model.device)
    loader = trainer.train_dataloader
    with isolate_rng(include_cuda=False):
        for batch in loader if loader is not None else []:
            targets = dense_targets(batch[1], task, width, check_values=False).to(model.device)
            positives += targets.sum(dim=0).double()
            rows += len(targets)
    positives = trainer.strategy.reduce(positives, reduce_op="sum")
    rows = trainer.strategy.reduce(rows, reduce_op="sum")
    return (positives / rows.clamp(min=1)).float()
