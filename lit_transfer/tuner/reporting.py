"""``TrialReporter``: a trial's validation metric to Optuna after every validation, and pruning.

A small callback rather than ``optuna_integration.PyTorchLightningPruningCallback``: that one raises
``optuna.TrialPruned`` from inside ``trainer.fit``, so Lightning treats the prune as a crash (``on_exception``
hooks run: an on-exception checkpoint is written, the run report is skipped) and, under DDP, it needs the
storage inside every spawned process. Here the trial stops the way an early stop does (``trainer.should_stop``),
the run's files are complete, and :mod:`lit_transfer.tuner.search` raises ``TrialPruned`` after ``fit`` returns.

Only global rank 0 talks to Optuna (``trial`` is ``None`` on the other ranks); its decision reaches every rank
through ``trainer.strategy.broadcast``, so all ranks stop at the same validation.
"""

from __future__ import annotations

import math
from typing import Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from optuna.trial import Trial
from typing_extensions import override

__all__ = ["TrialReporter"]


class TrialReporter(Callback):
    """Report ``metric`` to ``trial`` after each validation (step = the validation's index) and prune.

    Args:
        trial: The Optuna trial (``None`` on ranks other than 0, which only follow the decision).
        metric: The logged validation metric (``val_acc``).
        direction: ``"maximize"`` or ``"minimize"``; picks :attr:`best`.
        first_step: Step of the first validation (a later fold of the same trial continues the count).

    Attributes:
        values: The metric after each validation of this fit.
        pruned: Whether Optuna asked to stop (the fit then ended at that validation).
    """

    def __init__(
        self,
        trial: Trial | None,
        metric: str,
        direction: Literal["maximize", "minimize"],
        first_step: int = 0,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"`direction` must be 'maximize' or 'minimize', got {direction!r}.")
        self.trial = trial
        self.metric = metric
        self.direction = direction
        self.first_step = int(first_step)
        self.values: list[float] = []
        self.pruned = False

    @property
    def next_step(self) -> int:
        """The step the next validation would report (where a following fold starts)."""
        return self.first_step + len(self.values)

    @property
    def best(self) -> float | None:
        """The best reported value (as ``best.ckpt`` picks it), ``None`` before any validation."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return None
        return max(finite) if self.direction == "maximize" else min(finite)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics.get(self.metric)
        if logged is None:
            rank_zero_warn(
                f"The tuned metric `{self.metric}` was not logged in this validation; logged:"
                f" {sorted(trainer.callback_metrics)}. Choose one of them with `--metric`."
            )
            return
        value = float(logged)
        step = self.next_step
        self.values.append(value)
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned = True
            trainer.should_stop = True
