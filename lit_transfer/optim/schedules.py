"""The default LR schedule: linear warmup, then cosine decay.

:class:`WarmupCosineLR` is re-planned when a resumed run has another length than the checkpoint's (e.g. a larger
``max_epochs``), so extra epochs never train at the finished schedule's LR of 0.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR

from lit_transfer._compat import set_scheduler_last_lr

__all__ = ["WarmupCosine", "WarmupCosineLR"]


class WarmupCosine:
    """LR factor for ``LambdaLR``: linear warmup, then cosine decay to ``min_factor``.

    A plain object (not a lambda) so ``LambdaLR.state_dict()`` stores it and a resume restores it exactly.

    Args:
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Steps of linear warmup from ``warmup_start`` to 1.
        min_factor: Final factor at the end of the cosine.
        warmup_start: Factor at step 0.

    Example:
        >>> schedule = WarmupCosine(total_steps=10, warmup_steps=2)
        >>> [round(schedule(s), 3) for s in (0, 1, 2, 10)]
        [0.01, 0.505, 1.0, 0.0]
    """

    def __init__(
        self, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0, warmup_start: float = 0.01
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be positive, got {total_steps!r}.")
        self.total_steps = int(total_steps)
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.min_factor = float(min_factor)
        self.warmup_start = float(warmup_start)

    def __call__(self, step: int) -> float:
        """Factor of the base LR at optimizer step ``step``."""
        if step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """``LambdaLR`` over :class:`WarmupCosine`, stepped every optimizer step, that a longer resume re-plans.

    A plain ``LambdaLR`` restores the checkpoint's :class:`WarmupCosine` (its ``__dict__`` is in the scheduler's
    state), sized for the *old* run: resuming with a larger ``max_epochs`` would train every extra step at the
    finished schedule's factor ``min_factor`` (LR 0 by default), silently.

    This class keeps the plan of the run that loads the state. When the restored plan (``total_steps``,
    ``warmup_steps``, ``min_factor``, ``warmup_start``) differs from the one this run was built with, after
    :meth:`load_state_dict`:

    - the steps already done are kept: the scheduler continues at step ``k``, the checkpoint's ``last_epoch``;
    - from there the factor follows this run's plan, as if the run had been configured with its new length from the
      start: the factor of step ``s >= k`` is ``WarmupCosine(new_total, new_warmup)(s)``, reaching ``min_factor``
      at ``new_total``;
    - every param group's ``lr`` is set to ``base_lr`` times the factor of step ``k`` at once, so the first resumed
      step already uses it;
    - a warning names both plans and the LR factor before and after (the LR jumps when the old plan had decayed
      further, e.g. from 0 at the end of a finished 2-epoch run to 0.5 at the midpoint of a 4-epoch one).

    With an unchanged plan (a resume with the same ``max_epochs`` and data) nothing changes: the run is bit-exact with
    an uninterrupted one. The state dict is ``LambdaLR``'s, so checkpoints of either class load into the other.

    Args:
        optimizer: The optimizer (its groups' ``lr`` are the base LRs).
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Steps of linear warmup.
        min_factor: Final factor at the end of the cosine.
        warmup_start: Factor at step 0.
        last_epoch: ``LambdaLR``'s ``last_epoch``.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> old = WarmupCosineLR(opt, total_steps=4)
        >>> for _ in range(4):
        ...     opt.step(); old.step()
        >>> opt.param_groups[0]["lr"]  # the 4-step plan has ended
        0.0
        >>> longer = WarmupCosineLR(opt, total_steps=8)  # a resume planned for 8 steps
        >>> longer.load_state_dict(old.state_dict())  # warns: re-planned
        >>> round(opt.param_groups[0]["lr"], 3)  # step 4 of the 8-step plan
        0.5
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
        warmup_start: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        # No attribute of its own: `LambdaLR.state_dict()` saves every attribute but the optimizer and the lambdas.
        super().__init__(optimizer, WarmupCosine(total_steps, warmup_steps, min_factor, warmup_start), last_epoch)

    @property
    def schedule(self) -> WarmupCosine:
        """The factor function of every param group."""
        return cast("WarmupCosine", self.lr_lambdas[0])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position (and base LRs) of a checkpoint; re-plan when the checkpoint's length differs.

        Args:
            state_dict: ``state_dict()`` of a :class:`WarmupCosineLR` or of a ``LambdaLR`` over :class:`WarmupCosine`.
        """
        planned = dict(vars(self.schedule))
        super().load_state_dict(state_dict)
        restored = dict(vars(self.schedule))
        if restored == planned:
            return
        step = self.last_epoch
        old_factor = self.schedule(step)
        for fn in {id(fn): fn for fn in self.lr_lambdas}.values():  # one object shared by every group
            vars(fn).update(planned)
        new_factor = self.schedule(step)
        lrs = [base * new_factor for base in self.base_lrs]
        set_scheduler_last_lr(self, lrs)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        rank_zero_warn(
            f"The checkpoint's LR schedule was planned for {restored.get('total_steps')} optimizer steps"
            f" ({restored.get('warmup_steps')} of warmup), this run for {planned['total_steps']}"
            f" ({planned['warmup_steps']} of warmup): resuming at step {step}, the warmup-cosine schedule follows this"
            f" run's plan as if it had been configured from the start, so the LR factor at step {step} is"
            f" {new_factor:.4g} instead of the checkpoint plan's {old_factor:.4g}. To continue the old plan instead,"
            " resume with the checkpoint's `max_epochs`/`max_steps` (and the same data and batch size)."
        )
