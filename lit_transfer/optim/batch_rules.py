r"""The LR follows the global batch: the scaling rules, and their one application to a Trainer's optimizers.

When the global batch changes from :math:`B_0` to :math:`B`, every learning rate is multiplied by
:math:`B / B_0` (linear rule, Goyal et al. 2017) or :math:`\sqrt{B / B_0}` (sqrt rule, the usual choice for
Adam-family optimizers). :class:`~lit_transfer.callbacks.LRScaling` (scale for the run's batch, optionally follow
it) and :class:`~lit_transfer.callbacks.BatchSizeRamp` with ``lr_coupling="scale"`` both call
:func:`follow_batch`, which writes the factor into every copy of each group's LR (``lr``, ``initial_lr``, the
schedulers' base values), so neither callback imports the other and the rule has one definition.

Example:
    >>> scale_factor("linear", 1024, 256), scale_factor("sqrt", 1024, 256)
    (4.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import optim

from lit_transfer.optim.rescale import scale_trainer_learning_rates

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "RULES",
    "Rule",
    "check_rule",
    "default_rule",
    "follow_batch",
    "is_adaptive",
    "resolve_rule",
    "scale_factor",
]

Rule = Literal["linear", "sqrt"]
RULES: tuple[Rule, ...] = ("linear", "sqrt")

#: Optimizers whose per-coordinate adaptive step makes the square-root rule the better default.
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


def default_rule(optimizer: optim.Optimizer) -> Rule:
    """``"sqrt"`` for Adam-family (adaptive) optimizers, ``"linear"`` for SGD-like ones."""
    return "sqrt" if is_adaptive(optimizer) else "linear"


def check_rule(rule: Any, argument: str = "rule") -> None:
    """Raise unless ``rule`` is ``"linear"``, ``"sqrt"`` or ``None``.

    Raises:
        ValueError: Naming ``argument`` and echoing the bad value.
    """
    if rule is not None and rule not in RULES:
        raise ValueError(f"`{argument}` must be one of {RULES} or None, got {rule!r}.")


def resolve_rule(rule: Rule | None, optimizer: optim.Optimizer) -> Rule:
    """``rule``, or :func:`default_rule` of ``optimizer`` when ``rule`` is ``None``."""
    return default_rule(optimizer) if rule is None else rule


def scale_factor(rule: str, global_batch: int, base_batch_size: int) -> float:
    """The LR multiplier for ``global_batch`` relative to ``base_batch_size``: ``k`` (linear) or ``sqrt(k)``."""
    ratio = global_batch / base_batch_size
    return ratio if rule == "linear" else math.sqrt(ratio)


def follow_batch(trainer: Any, rule: str, from_batch: int, to_batch: int) -> float:
    """Rescale every LR of ``trainer`` (optimizers and their schedulers) from ``from_batch`` to ``to_batch``.

    Args:
        trainer: The Trainer whose optimizers and LR schedulers are rescaled.
        rule: ``"linear"`` or ``"sqrt"``.
        from_batch: The global batch the current LRs are meant for.
        to_batch: The global batch they are rescaled for.

    Returns:
        The factor applied (1 when the batches are equal: nothing is written).
    """
    factor = scale_factor(rule, to_batch, from_batch)
    if factor != 1.0:
        scale_trainer_learning_rates(trainer, factor)
    return factor
