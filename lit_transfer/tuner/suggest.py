"""Learning-rate suggestions from an LR range test's (lr, loss) curve, as pure functions.

A range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3) trains with an LR that
grows exponentially from step to step and records the training loss. The loss first stays flat (the LR is too small
to move the weights), then falls, then rises again as the LR becomes too large. Three rules read an LR off that
curve, all on the *smoothed* loss (:func:`smooth_losses`):

* ``"valley"`` (fastai's default since 2021): the longest stretch over which the loss keeps falling (the longest
  decreasing subsequence of the curve), and the LR about half-way down it (fastai's ``valley``).
* ``"steep"``: the LR where the loss falls fastest per decade of LR (the minimum of ``d loss / d log10 lr``;
  fastai's ``steep``; Lightning's ``suggestion()`` takes the minimum gradient too, after skipping the first 10
  points).
* ``"minimum"``: a tenth of the LR at the lowest loss (fastai's ``minimum``; the lowest point itself is already
  where training starts to become unstable).

Which rule :func:`~lit_transfer.tuner.finder.find_lr` uses by default is measured, not assumed:
``benchmarks/lr_finder.py`` scores a fine-tune at each rule's suggestion against a brute-force LR grid (see
``docs/lr-finder.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = ["DEFAULT_RULE", "DEFAULT_SMOOTHING", "RULES", "Rule", "smooth_losses", "suggest_index", "suggest_lr"]

Rule = Literal["valley", "steep", "minimum"]
RULES: tuple[Rule, ...] = ("valley", "steep", "minimum")
DEFAULT_RULE: Rule = "valley"
"""The rule ``find_lr`` uses unless told otherwise; chosen by ``benchmarks/lr_finder.py`` (docs/lr-finder.md)."""
DEFAULT_SMOOTHING = 0.9
"""The loss's smoothing factor unless told otherwise (fastai and Lightning use 0.98: an average over about 50 steps,
which lags a short test's curve); why this value is in docs/lr-finder.md."""


def smooth_losses(losses: Sequence[float], beta: float = DEFAULT_SMOOTHING) -> list[float]:
    """Exponential moving average of ``losses`` with bias correction (fastai's and Lightning's smoothing).

    Args:
        losses: Raw per-step training losses.
        beta: Smoothing factor in ``[0, 1)``; 0 returns the losses unchanged.

    Returns:
        The smoothed losses, one per input.

    Example:
        >>> [round(v, 6) for v in smooth_losses([1.0, 1.0, 1.0])]
        [1.0, 1.0, 1.0]
        >>> [round(v, 3) for v in smooth_losses([2.0, 0.0], beta=0.5)]
        [2.0, 0.667]
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"`smoothing` must be in [0, 1), got {beta!r}.")
    smoothed: list[float] = []
    average = 0.0
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        smoothed.append(average / (1 - beta**step))
    return smoothed


def _check_rule(rule: str) -> Rule:
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}.")
    return rule  # type: ignore[return-value]


def suggest_index(lrs: Sequence[float], losses: Sequence[float], rule: str = DEFAULT_RULE) -> int | None:
    """Index of the suggested point of a range-test curve (``None`` when the curve is too short or not finite).

    The curve ends at its first non-finite loss; its first tenth and last ``min(5, n // 10)`` points are left out
    (fastai's window), as they are dominated by the smoothing's start and by divergence.

    Args:
        lrs: Increasing learning rates, one per step.
        losses: The smoothed loss at each of them (:func:`smooth_losses`).
        rule: ``"valley"``, ``"steep"`` or ``"minimum"`` (see the module docstring). For ``"minimum"`` this is the
            lowest point; :func:`suggest_lr` divides its LR by 10.

    Returns:
        An index into ``lrs``, or ``None``.

    Example:
        >>> lrs = [10.0**e for e in range(-6, 1)]
        >>> losses = [2.3, 2.3, 2.2, 1.6, 1.0, 1.2, 9.0]
        >>> suggest_index(lrs, losses, "steep"), suggest_index(lrs, losses, "minimum")
        (3, 4)
    """
    rule = _check_rule(rule)
    n = min(len(lrs), len(losses))
    n = next((i for i in range(n) if not math.isfinite(losses[i])), n)  # the curve ends at its first NaN/inf
    begin, end = n // 10, n - min(5, n // 10)  # fastai's window: the first 10 % and the last points are noise
    if end - begin < 3:
        return None
    values = [float(v) for v in losses[begin:end]]
    logs = [math.log10(lr) for lr in lrs[begin:end]]
    if rule == "minimum":
        index = min(range(len(values)), key=values.__getitem__)
    elif rule == "steep":
        slopes = [_slope(logs, values, i) for i in range(len(values))]
        index = min(range(len(values)), key=slopes.__getitem__)
    else:
        index = _valley(values)
    return begin + index


def _slope(x: list[float], y: list[float], i: int) -> float:
    """``dy/dx`` at ``i`` by central differences (one-sided at the ends), as ``numpy.gradient``."""
    lo, hi = max(0, i - 1), min(len(x) - 1, i + 1)
    return (y[hi] - y[lo]) / (x[hi] - x[lo])


def _valley(values: list[float]) -> int:
    """The valley rule (fastai's): half-way down the longest decreasing subsequence of the curve."""
    n = len(values)
    length = [1] * n
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
        if length[i] > length[best_end]:
            best_end = i
    start = max(0, best_end - length[best_end])
    third = (best_end - start) / 3
    return min(n - 1, start + int(third) + int(third / 2))


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], rule: str = DEFAULT_RULE) -> float | None:
    """The learning rate a rule suggests for a range-test curve (``None`` when it cannot tell).

    Args:
        lrs: Increasing learning rates, one per step.
        losses: The smoothed loss at each of them.
        rule: ``"valley"``, ``"steep"`` or ``"minimum"``.

    Returns:
        The suggested learning rate.

    Example:
        >>> lrs = [10.0**e for e in range(-6, 1)]
        >>> suggest_lr(lrs, [2.3, 2.3, 2.2, 1.6, 1.0, 1.2, 9.0], "minimum")
        0.001
    """
    index = suggest_index(lrs, losses, rule)
    if index is None:
        return None
    return float(lrs[index]) / (10.0 if rule == "minimum" else 1.0)
