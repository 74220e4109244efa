"""A warning when Lightning's ``EMAWeightAveraging`` averages over more optimizer steps than the fit updates it.

After ``U`` updates of an exponential average with ``decay``, the weights of the first update keep the share
``decay ** (U - 1)`` of the average. When ``U`` is at most ``1 / (1 - decay)``, the steps the average spans, that
share is more than ``1 / e`` (about a third): the averaged weights, which validation, the checkpoints and the
final model use, stay close to those of the first steps. Few-shot fine-tunes make few steps, and Lightning's
default ``decay`` (0.999) spans about 1000; the ``weight_averaging`` benchmark measures what that costs.
"""

from __future__ import annotations

import math

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer._compat import ema_decay

__all__ = ["average_updates", "warn_if_average_outlasts_the_fit"]


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


def warn_if_average_outlasts_the_fit(trainer: Trainer) -> None:
    """Warn for each ``EMAWeightAveraging`` of a fresh ``fit`` updated at most ``1 / (1 - decay)`` times."""
    if trainer.ckpt_path is not None:
        return
    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning, undeclared
        if not isinstance(callback, EMAWeightAveraging):
            continue
        decay = ema_decay(callback)
        if decay is None or not 0 < decay < 1:
            continue
        updates = average_updates(callback, trainer.estimated_stepping_batches)
        if updates == 0 or updates > 1 / (1 - decay):
            continue
        rank_zero_warn(
            f"EMAWeightAveraging(decay={decay:g}) averages over about {1 / (1 - decay):.0f} optimizer steps, but this"
            f" fit updates the average {updates} times: more than a third of the averaged weights, which validation,"
            " the checkpoints and the final model use, stay those of the first step. Choose a `decay` whose"
            f" 1 / (1 - decay) is well below {updates} (docs/weight-averaging.md measures three), or leave the"
            " average out."
        )
