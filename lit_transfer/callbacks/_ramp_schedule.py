"""Pure batch-size ramp arithmetic: sizes per epoch and the true optimizer-step horizon."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RampSchedule:
    """A batch-size schedule relative to the initial per-device batch ``b0`` and accumulation ``a0``.

    Args:
        milestones: ``{epoch: factor}``; the factor of the largest milestone <= epoch applies (1 before any).
        every_n_epochs: With ``factor``: multiply by ``factor`` every ``every_n_epochs`` epochs.
        factor: See ``every_n_epochs``.
        max_batch_size: Cap on the per-device batch (``"batch"``: hard cap; ``"auto"``: accumulate beyond it).
        mode: ``"batch"``, ``"accumulate"`` or ``"auto"``.
    """

    milestones: tuple[tuple[int, float], ...] | None
    every_n_epochs: int | None
    factor: float
    max_batch_size: int | None
    mode: str

    def factor_at(self, epoch: int) -> float:
        """The batch multiplier for ``epoch``."""
        if self.milestones is not None:
            value = 1.0
            for milestone, factor in self.milestones:
                if milestone <= epoch:
                    value = factor
            return value
        assert self.every_n_epochs is not None
        return self.factor ** (epoch // self.every_n_epochs)

    def sizes_at(self, epoch: int, b0: int, a0: int) -> tuple[int, int]:
        """``(per-device batch, accumulate_grad_batches)`` for ``epoch``.

        Raises:
            ValueError: If the factor does not give a whole number of samples or accumulation steps.
        """
        factor = self.factor_at(epoch)
        if self.mode == "accumulate":
            return b0, a0 * _whole(factor, f"accumulation factor {factor} at epoch {epoch}")
        total = _whole(b0 * factor, f"batch size {b0} x {factor} at epoch {epoch}")
        cap = self.max_batch_size
        if cap is None or total <= cap:
            return total, a0
        if self.mode == "batch":
            return cap, a0
        if total % cap:
            raise ValueError(
                f"BatchSizeRamp(mode='auto'): the batch {total} at epoch {epoch} is not a multiple of"
                f" `max_batch_size={cap}`; choose factors or a cap that divide evenly."
            )
        return cap, a0 * (total // cap)


def _whole(value: float, what: str) -> int:
    rounded = round(value)
    if rounded < 1 or not math.isclose(value, rounded, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"BatchSizeRamp: {what} must be a positive whole number, got {value!r}.")
    return rounded


def batches_per_epoch(samples: int, batch_size: int, drop_last: bool = False, limit: int | float = 1.0) -> int:
    """Number of train batches of one rank, with Lightning's ``limit_train_batches`` applied."""
    batches = samples // batch_size if drop_last else math.ceil(samples / batch_size)
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if limit < 1.0 else batches


def ramp_total_steps(
    samples_per_rank: int,
    sizes: Iterable[tuple[int, int]],
    drop_last: bool = False,
    limit_train_batches: int | float = 1.0,
) -> int:
    """The true number of optimizer steps of a run whose epochs use ``sizes`` = ``[(batch, accumulation), ...]``.

    Lightning steps once per ``accumulation`` batches and once more on a shorter last window, so an epoch of
    ``n`` batches takes ``ceil(n / accumulation)`` steps.

    Example:
        >>> ramp_total_steps(16, [(2, 1), (4, 1), (8, 1)])
        14
    """
    return sum(
        math.ceil(batches_per_epoch(samples_per_rank, batch, drop_last, limit_train_batches) / accumulation)
        for batch, accumulation in sizes
    )
