"""``GroupLRFinder``: an LR range test at the start of ``fit`` that keeps layer-wise LR ratios.

The test itself and the suggestion rules live in :mod:`lit_transfer.tuner`.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.optim.rescale import scale_learning_rates
from lit_transfer.tuner.range_test import check_range, reference_lr, run_range_test
from lit_transfer.tuner.result import LRFinderResult, finder_result
from lit_transfer.tuner.suggest import DEFAULT_RULE, DEFAULT_SMOOTHING, RULES, smooth_losses

__all__ = ["GroupLRFinder"]


class GroupLRFinder(Callback):
    """Run an LR range test at the start of ``fit`` and train with the suggested LR, layer-wise ratios kept.

    The test trains what the first phase of the module's freezing policy trains, scales every param group's LR by
    one factor, then restores the weights, optimizer, schedulers, loops and RNG states exactly (see
    :mod:`lit_transfer.tuner.range_test`). With ``apply=True`` every group's LR, and every LR the schedulers hold, is
    then multiplied by ``suggestion / configured_lr``: the schedule (warmup, cosine, one-cycle) runs as configured
    around the new peak. A resumed ``fit`` (global step > 0) runs no test: its LRs come from the checkpoint. The test
    runs at the start of ``fit``, before a :class:`~lit_transfer.callbacks.HeadProbe` fits the head at the start of
    training (``probe_views``), so it ramps the head as initialised.

    Args:
        min_lr: Configured (head) LR of the first step.
        max_lr: Configured (head) LR of the last step.
        num_steps: Optimizer steps of the ramp.
        rule: Suggestion rule, ``"valley"`` (default, see :mod:`lit_transfer.tuner.suggest`), ``"steep"`` or
            ``"minimum"``.
        smoothing: Exponential smoothing of the recorded loss.
        diverge_factor: Stop once the smoothed loss exceeds this multiple of its minimum (``None``: never).
        apply: Train with the suggestion (``False``: only record it).
        cache_features: Run the test's head steps on features the frozen backbone computed once: ``None``
            (default) when the first phase trains the head alone on a frozen backbone, ``True`` to require
            it, ``False`` to run every step on images (see :mod:`lit_transfer.tuner.range_test`).
        out_dir: Folder for the plot and CSV (default ``<trainer.log_dir>/lr_find``); written by rank 0.

    Attributes:
        result: The :class:`LRFinderResult` of the last test, or ``None``.

    Example:
        >>> GroupLRFinder(num_steps=50)
        GroupLRFinder(min_lr=1e-06, max_lr=1.0, num_steps=50, rule='valley')
    """

    def __init__(
        self,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_steps: int = 100,
        rule: str = DEFAULT_RULE,
        smoothing: float = DEFAULT_SMOOTHING,
        diverge_factor: float | None = 4.0,
        apply: bool = True,
        out_dir: str | Path | None = None,
        cache_features: bool | None = None,
    ) -> None:
        check_range(min_lr, max_lr, num_steps, diverge_factor)
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}.")
        smooth_losses([], smoothing)  # checks the range
        if cache_features not in (None, True, False):
            raise ValueError(f"`cache_features` must be true, false or null (decide), got {cache_features!r}.")
        self.cache_features = cache_features
        self.min_lr, self.max_lr, self.num_steps = float(min_lr), float(max_lr), num_steps
        self.rule, self.smoothing, self.diverge_factor = rule, smoothing, diverge_factor
        self.apply = apply
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.result: LRFinderResult | None = None
        self._stop_after_test = False
        self._write_files = True

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_lr={self.min_lr!r}, max_lr={self.max_lr!r}, num_steps={self.num_steps!r},"
            f" rule={self.rule!r})"
        )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step > 0:
            rank_zero_info("GroupLRFinder: a resumed fit keeps its checkpoint's learning rates; no range test.")
            return
        started = time.perf_counter()
        curve = run_range_test(
            trainer,
            pl_module,
            self.min_lr,
            self.max_lr,
            self.num_steps,
            smoothing=self.smoothing,
            diverge_factor=self.diverge_factor,
            cache_features=self.cache_features,
        )
        self.result = finder_result(curve, self.rule, self.smoothing, trainer, time.perf_counter() - started)
        if trainer.is_global_zero and self._write_files:
            self.result.save(self.out_dir or Path(trainer.log_dir or trainer.default_root_dir) / "lr_find")
        rank_zero_info(self.result.summary())
        if self._stop_after_test:
            trainer.should_stop = True
            trainer.num_sanity_val_steps = 0
            trainer.fit_loop.min_epochs = None
            trainer.fit_loop.epoch_loop.min_steps = None
        elif self.apply and self.result.suggestion is not None:
            self._apply(trainer, self.result.suggestion)

    @staticmethod
    def _apply(trainer: Trainer, lr: float) -> None:
        optimizer = trainer.optimizers[0]
        factor = lr / reference_lr(optimizer)
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        scale_learning_rates(optimizer, schedulers, factor)
        optimizer.defaults["lr"] = lr
