"""A learning-rate finder that keeps layer-wise LR ratios and trains only what the first freezing phase trains.

Lightning's ``Tuner.lr_find`` and ``LearningRateFinder`` give every param group the same LR during the sweep (the
layer-decay ratios are lost) and sweep the whole model; fastai's ``lr_find`` suggests one LR for all groups too.
Here the range test (:mod:`lit_transfer.tuner.range_test`) multiplies every group's LR by one common factor, so a
``layer_decay`` or ``frozen_lr_mult`` keeps its ratios, and :class:`~lit_transfer.callbacks.LayerFreezing` keeps
the groups the policy's first phase freezes frozen. ``min_lr``, ``max_lr`` and the suggestion refer to the
optimizer's configured LR (the head's; ``--model.optimizer.init_args.lr`` on the command line).

Three ways in:

* :func:`find_lr` ``(model, datamodule)`` runs the test and returns an :class:`LRFinderResult`; the model, its
  RNG and everything else are left exactly as they were, so a ``fit`` after it equals a ``fit`` without it.
* :class:`GroupLRFinder`, a callback: runs the test at the start of ``fit`` and trains with the suggestion (every
  group's LR scaled by the same factor). Works in any Lightning project and in a YAML recipe's
  ``trainer.callbacks``.
* ``lit-transfer lr-find --config ...``: the same model, data and trainer as ``fit``; writes the plot and the CSV
  into ``<run>/lr_find/`` and prints the override to paste (see ``docs/lr-finder.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities.seed import isolate_rng

from lit_transfer.callbacks.group_lr_finder import GroupLRFinder
from lit_transfer.trainer_facts import callbacks_of
from lit_transfer.training_state import kept_training_state
from lit_transfer.tuner.result import LRFinderResult
from lit_transfer.tuner.suggest import DEFAULT_RULE, DEFAULT_SMOOTHING

__all__ = ["find_lr"]


def find_lr(
    model: LightningModule,
    datamodule: LightningDataModule | None = None,
    *,
    train_dataloaders: Any = None,
    trainer: Trainer | None = None,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 100,
    rule: str = DEFAULT_RULE,
    smoothing: float = DEFAULT_SMOOTHING,
    diverge_factor: float | None = 4.0,
    out_dir: str | Path | None = None,
    cache_features: bool | None = None,
) -> LRFinderResult:
    """Run an LR range test of ``model``'s first freezing phase; leave the model and the RNG as they were.

    Args:
        model: The LightningModule (e.g. a :class:`~lit_transfer.TransferClassifier`); its optimizer, layer decay
            and freezing policy are used as ``fit`` would use them.
        datamodule: The data (or pass ``train_dataloaders``).
        train_dataloaders: Training data when there is no DataModule.
        trainer: The Trainer to run in (its accelerator, precision, strategy); default: a quiet one-device Trainer.
            It is spent afterwards (its ``fit`` is stopped right after the test): build a new one to train.
        min_lr: Configured (head) LR of the first step.
        max_lr: Configured (head) LR of the last step.
        num_steps: Optimizer steps of the ramp.
        rule: Suggestion rule (``"valley"``, ``"steep"``, ``"minimum"``).
        smoothing: Exponential smoothing of the recorded loss.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum (``None``: never).
        out_dir: Where to write the plot and CSV (nothing is written when ``None``; call
            :meth:`LRFinderResult.save` yourself).
        cache_features: Run the head's steps on features the frozen backbone computed once: ``None`` (default)
            when the first phase trains the head alone, ``True`` to require it, ``False`` to step on images.

    Returns:
        The :class:`LRFinderResult`.

    Example:
        >>> from lit_transfer import TransferClassifier
        >>> from lit_transfer.data import DigitsDataModule
        >>> model = TransferClassifier("test_resnet", num_classes=3, pretrained=False, layer_decay=0.5)
        >>> data = DigitsDataModule(classes=[0, 1, 2], image_size=16, batch_size=16, num_workers=0)
        >>> result = find_lr(model, data, num_steps=10, max_lr=0.1)
        >>> len(result.lrs) <= 10 and result.group_ratios["head"] == 1.0
        True
    """
    finder = GroupLRFinder(
        min_lr,
        max_lr,
        num_steps,
        rule,
        smoothing,
        diverge_factor,
        apply=False,
        out_dir=out_dir,
        cache_features=cache_features,
    )
    finder._stop_after_test = True
    finder._write_files = out_dir is not None
    if trainer is None:
        trainer = Trainer(
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
    trainer.callbacks = [finder, *callbacks_of(trainer)]  # type: ignore[attr-defined]
    with kept_training_state(model), isolate_rng(include_cuda=True):  # a stopped fit leaves its first phase's flags
        trainer.fit(model, datamodule=datamodule, train_dataloaders=train_dataloaders)
    if finder.result is None:
        raise RuntimeError("The LR range test did not run: `fit` ended before it started.")
    return finder.result
