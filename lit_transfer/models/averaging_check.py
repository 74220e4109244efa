"""Warnings for a Lightning weight average that the fit's results will not reflect.

An ``EMAWeightAveraging`` that averages over more optimizer steps than the fit updates it: after ``U`` updates of
an exponential average with ``decay``, the weights of the first update keep the share ``decay ** (U - 1)`` of the
average. When ``U`` is at most ``1 / (1 - decay)``, the steps the average spans, that share is more than ``1 / e``
(about a third): the averaged weights, which validation, the checkpoints and the final model use, stay close to
those of the first steps. Few-shot fine-tunes make few steps, and Lightning's default ``decay`` (0.999) spans about
1000; the ``weight_averaging`` benchmark measures what that costs.

An average that a fit never updates (``update_starting_at_step`` beyond the fit's steps, no
``update_starting_at_epoch`` within its epochs) is worse: Lightning's callback still puts it into the model for
validation, saves it as every checkpoint's weights and copies it into the model when ``fit`` ends, so the fit ends
with the weights it started from. That is warned about too.

Lightning's older ``StochasticWeightAveraging`` copies its average into the model when training ends. With a
BatchNorm in the model it first runs one more epoch to recompute the statistics, validated and checkpointed like any
other; without one, the copy comes after the last validation and checkpoint: the validation metrics, every
checkpoint and a sigmoid model's decision thresholds belong to the last training weights, not to the average the
model ends with. ``WeightAveraging()`` (an equal average of every step, Lightning 2.6) validates and saves the average.
"""

from __future__ import annotations

import math

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_transfer._compat import ema_decay
from lit_transfer.trainer_facts import callbacks_of, find_callback

__all__ = [
    "average_updates",
    "check_weight_averages",
    "updates_at_epoch_ends",
    "warn_if_average_outlasts_the_fit",
    "warn_if_swa_average_is_never_validated",
]


def check_weight_averages(trainer: Trainer, module: nn.Module) -> None:
    """The warnings of this module for a fresh ``fit`` of ``module`` (nothing on a resume)."""
    if trainer.ckpt_path is not None:
        return
    warn_if_average_outlasts_the_fit(trainer)
    warn_if_swa_average_is_never_validated(trainer, module)


def warn_if_swa_average_is_never_validated(trainer: Trainer, module: nn.Module) -> None:
    """Warn when a ``StochasticWeightAveraging`` will copy its average into a model without BatchNorm at the end."""
    if find_callback(trainer, StochasticWeightAveraging) is None:
        return
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return  # SWA's extra epoch recomputes the statistics, and validates and saves the average
    rank_zero_warn(
        "StochasticWeightAveraging copies its average into this model (which has no BatchNorm) when training ends,"
        " after the last validation and checkpoint: the validation metrics, the checkpoints and a multi-label or"
        " binary model's decision thresholds belong to the last training weights, not to the average the model"
        " ends with. Lightning's WeightAveraging() (`--trainer.callbacks+=WeightAveraging`: an equal average of"
        " every step) validates and saves the average."
    )


def average_updates(callback: EMAWeightAveraging, total_steps: float) -> float:
    """How many optimizer steps of a fit of ``total_steps`` update the average (its step-based updates).

    Example:
        >>> average_updates(EMAWeightAveraging(update_every_n_steps=2, update_starting_at_step=10), 30)
        10
    """
    every = int(callback.update_every_n_steps)
    if every <= 0:  # no step-based updates
        return 0
    if math.isinf(total_steps):
        return math.inf
    start = int(callback.update_starting_at_step or 0)
    return max(0, math.ceil((int(total_steps) - start) / every))


def updates_at_epoch_ends(callback: EMAWeightAveraging, max_epochs: int | None) -> bool:
    """Whether ``update_starting_at_epoch`` updates the average at the end of an epoch of a fit of ``max_epochs``.

    Example:
        >>> updates_at_epoch_ends(EMAWeightAveraging(update_starting_at_epoch=3), 3)
        False
    """
    start = callback.update_starting_at_epoch
    return start is not None and (max_epochs is None or max_epochs < 0 or start < max_epochs)


def warn_if_average_outlasts_the_fit(trainer: Trainer) -> None:
    """Warn for each ``EMAWeightAveraging`` of a fit updated never, or at most ``1 / (1 - decay)`` times."""
    for callback in callbacks_of(trainer):
        if not isinstance(callback, EMAWeightAveraging):
            continue
        updates = average_updates(callback, trainer.estimated_stepping_batches)
        if updates == 0 and not updates_at_epoch_ends(callback, trainer.max_epochs):
            rank_zero_warn(
                f"EMAWeightAveraging(update_every_n_steps={callback.update_every_n_steps},"
                f" update_starting_at_step={callback.update_starting_at_step},"
                f" update_starting_at_epoch={callback.update_starting_at_epoch}) never updates its average in this"
                f" fit of {trainer.estimated_stepping_batches:g} optimizer steps: validation, every checkpoint and the"
                " model after fit would hold the weights the fit started from. Start averaging within the fit or"
                " leave the average out."
            )
            continue
        decay = ema_decay(callback)
        if decay is None or not 0 < decay < 1 or updates == 0 or updates > 1 / (1 - decay):
            continue
        rank_zero_warn(
            f"EMAWeightAveraging(decay={decay:g}) averages over about {1 / (1 - decay):.0f} optimizer steps, but this"
            f" fit updates the average {updates} times: more than a third of the averaged weights, which validation,"
            " the checkpoints and the final model use, stay those of the first step. Choose a `decay` whose"
            f" 1 / (1 - decay) is well below {updates} (docs/weight-averaging.md measures three), or leave the"
            " average out."
        )
