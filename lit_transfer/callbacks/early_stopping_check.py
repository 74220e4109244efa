"""A warning when Lightning's ``EarlyStopping`` can end a fit before its freezing policy's last phase begins.

While only the head trains, the validation metric often stops improving within a few epochs; an ``EarlyStopping``
whose patience runs out then ends the run before the backbone ever trains. ``Trainer(min_epochs=...)`` holds an
early stop back until that many epochs have run, which :class:`~lit_transfer.callbacks.LayerFreezing` names in
its warning at the start of a fresh ``fit``.

The check assumes one validation every ``check_val_every_n_epoch`` epochs and counts only ``patience``: a stop by
``stopping_threshold``, ``divergence_threshold`` or a non-finite metric can come earlier, and a stop checked on
validations within an epoch (``val_check_interval`` below 1) too.
"""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.freezing import AutoFreeze, FreezingPolicy

__all__ = ["earliest_stop_epoch", "last_phase_start", "warn_if_early_stopping_cuts_a_phase"]

_HORIZON = 1000
"""Epochs scanned for phase changes when the Trainer has no ``max_epochs``."""


def last_phase_start(policy: FreezingPolicy, num_groups: int, max_epochs: int | None) -> int | None:
    """The first epoch of the policy's last phase, or ``None`` when the trainable groups never change.

    A phase starts at each epoch whose trainable groups differ from the epoch before. An :class:`AutoFreeze` not yet
    decided starts its plan at its ``decision_epoch``.

    Example:
        >>> from lit_transfer.freezing import FreezeUnfreeze, GradualUnfreeze, LinearProbe
        >>> last_phase_start(FreezeUnfreeze(unfreeze_at_epoch=3), num_groups=6, max_epochs=10)
        3
        >>> last_phase_start(GradualUnfreeze(every_n_epochs=2), num_groups=6, max_epochs=20)
        10
        >>> last_phase_start(LinearProbe(), num_groups=6, max_epochs=10) is None
        True
    """
    horizon = max_epochs if max_epochs is not None and max_epochs > 0 else _HORIZON
    if isinstance(policy, AutoFreeze) and policy.plan is None:  # undecided: its plan starts at the decision
        return policy.decision_epoch if policy.decision_epoch < horizon else None
    last, previous = None, policy.trainable_mask(0, num_groups)
    for epoch in range(1, horizon):
        mask = policy.trainable_mask(epoch, num_groups)
        if mask != previous:
            last = epoch
        previous = mask
    return last


def _validation_every(trainer: Trainer) -> int:
    return max(int(trainer.check_val_every_n_epoch or 1), 1)


def _patience_epochs(stopping: EarlyStopping, trainer: Trainer) -> int:
    """The epochs ``stopping``'s patience spans: ``patience`` validations (at least one) without improvement."""
    return max(int(stopping.patience), 1) * _validation_every(trainer)


def earliest_stop_epoch(stopping: EarlyStopping, trainer: Trainer) -> int:
    """The last epoch (0-based) of the shortest run ``stopping`` can end by its patience, ``min_epochs`` included.

    The first validation sets the best value; the stop comes when ``patience`` more validations (at least one)
    did not improve on it, and Lightning holds it back until ``min_epochs`` epochs have run.
    """
    by_patience = _validation_every(trainer) + _patience_epochs(stopping, trainer) - 1
    return max(by_patience, int(trainer.min_epochs or 0) - 1)


def warn_if_early_stopping_cuts_a_phase(trainer: Trainer, policy: FreezingPolicy, num_groups: int) -> None:
    """Warn, once per ``EarlyStopping``, when its patience can end a fresh fit before the policy's last phase."""
    stoppers = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]  # type: ignore[attr-defined]
    if not stoppers or trainer.ckpt_path is not None:
        return
    start = last_phase_start(policy, num_groups, trainer.max_epochs)
    if start is None:
        return
    for stopping in stoppers:
        end = earliest_stop_epoch(stopping, trainer)
        if end >= start:
            continue
        needed = start + 1 + _patience_epochs(stopping, trainer)
        rank_zero_warn(
            f"EarlyStopping(monitor={stopping.monitor!r}, patience={stopping.patience}) can end this fit after"
            f" epoch {end}, before epoch {start}, where `freeze: {policy.name}` starts its last phase: the groups it"
            f" unfreezes would never train. Set `trainer.min_epochs` to {needed} (`--trainer.min_epochs {needed}`):"
            " Lightning holds an early stop back until then, which gives the last phase the same patience."
        )
