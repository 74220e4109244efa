"""The test report of multi-label and regression models in :class:`~lit_transfer.callbacks.RunReport`.

Where a classifier gets a confusion matrix (:mod:`._report_confusion`), a multi-label model gets the average
precision of every label (torchmetrics ``MultilabelAveragePrecision``) and a regression model its predicted values
against the true ones, with MAE, RMSE and R² per target, in the targets' original units. Both read the raw outputs
the module computed itself, as the confusion matrix does, and torchmetrics gathers them over a DDP run.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torchmetrics import CatMetric
from torchmetrics.classification import MultilabelAveragePrecision

from lit_transfer.callbacks.report.confusion import TestConfusion, _logits, split_batch
from lit_transfer.tasks import target_stats_of

__all__ = ["TestLabelAP", "TestRegression", "logged_label_ap", "plot_predicted_vs_true", "regression_rows"]


class TestLabelAP(TestConfusion):
    """Average precision per label of a multi-label model's ``test`` (multi-hot ``(N, L)`` targets).

    A module that logs each label's test AP itself (``logs_label_ap`` true, as a multi-label
    :class:`~lit_transfer.TransferClassifier` does, as ``test_ap_<label>``) is not computed twice: only the positives
    are counted here, and the report takes the module's logged values (:func:`logged_label_ap`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ap: MultilabelAveragePrecision | None = None
        self.positives: torch.Tensor | None = None

    def update(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any) -> None:
        """Add one test batch's outputs (logits; probabilities work the same) and multi-hot targets."""
        captured, self._captured = self._captured, None
        x, targets = split_batch(batch)
        if targets is None or targets.ndim != 2:
            self._warn_once("labels", "test batches carry no multi-hot targets; no per-label AP is computed.")
            return
        logits = _logits(outputs, captured, len(targets))
        if logits is None:
            with torch.no_grad():
                logits = pl_module(x)
            self._captured = None
        if self.positives is None:
            self.positives = torch.zeros(targets.shape[1], dtype=torch.long, device=logits.device)
            if not getattr(pl_module, "logs_label_ap", False):
                self.ap = MultilabelAveragePrecision(num_labels=targets.shape[1], average=None).to(logits.device)
        if self.ap is not None:
            self.ap.update(logits.float(), targets.long().to(logits.device))
        self.positives = self.positives + targets.long().to(logits.device).sum(dim=0)

    def compute(self, trainer: Trainer, device: torch.device) -> tuple[list[float] | None, list[int]] | None:  # type: ignore[override]
        """AP (``None`` when the module logs it) and positive count per label, or ``None``; every rank calls."""
        if self.positives is None:
            return None
        positives = self.positives
        if trainer.world_size > 1:
            positives = trainer.strategy.reduce(positives, reduce_op="sum")
        counts = [int(p) for p in positives.cpu().tolist()]
        if self.ap is None:
            return None, counts
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(positive|compute).*")
            ap = self.ap.compute().float().cpu()
        return with_nan_without_positives(ap.tolist(), counts), counts


def logged_label_ap(trainer: Trainer, names: list[str], positives: list[int]) -> list[float]:
    """The ``test_ap_<label>`` values a module logged, NaN for labels without positives (or not logged)."""
    metrics = trainer.callback_metrics
    ap = [float(metrics[f"test_ap_{name}"]) if f"test_ap_{name}" in metrics else math.nan for name in names]
    return with_nan_without_positives(ap, positives)


def with_nan_without_positives(ap: list[float], positives: list[int]) -> list[float]:
    """``ap`` with NaN for every label that has no positive in the data (its AP is undefined)."""
    return [value if count > 0 else math.nan for value, count in zip(ap, positives)]


class TestRegression(TestConfusion):
    """Predicted and true values of a regression model's ``test``, in the targets' original units."""

    def __init__(self) -> None:
        super().__init__()
        self.predicted: CatMetric | None = None
        self.true: CatMetric | None = None

    def update(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any) -> None:
        """Add one test batch: the module's raw (standardised) outputs and targets, both brought to original units."""
        captured, self._captured = self._captured, None
        x, targets = split_batch(batch)
        if targets is None or not targets.is_floating_point():
            self._warn_once("targets", "test batches carry no regression targets; no predicted-vs-true plot is drawn.")
            return
        targets = targets.reshape(len(targets), -1)
        values = _logits(outputs, captured, len(targets))
        if values is None:
            with torch.no_grad():
                values = pl_module(x)
            self._captured = None
        values = values.reshape(len(values), -1).float()
        stats = target_stats_of(pl_module)
        if stats is not None:
            mean = torch.tensor(stats["mean"], device=values.device)
            std = torch.tensor(stats["std"], device=values.device)
            values, targets = values * std + mean, targets.to(values.device).float() * std + mean
        if self.predicted is None or self.true is None:
            self.predicted, self.true = CatMetric().to(values.device), CatMetric().to(values.device)
        self.predicted.update(values)
        self.true.update(targets.to(values.device).float())

    def compute(self, trainer: Trainer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:  # type: ignore[override]
        """``(predicted, true)`` ``(N, K)`` on the CPU (gathered from every rank), or ``None``; every rank calls."""
        if self.predicted is None or self.true is None:
            return None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            predicted, true = self.predicted.compute(), self.true.compute()
        width = max(1, int(true.numel() // max(1, len(true))) if true.ndim == 2 else 1)
        return predicted.reshape(-1, width).cpu(), true.reshape(-1, width).cpu()


def regression_rows(predicted: torch.Tensor, true: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """One row per target: ``target``, ``mae``, ``rmse``, ``r2`` and ``samples``.

    R² is ``1 - SS_res / SS_tot`` (NaN when the true values do not vary).

    Example:
        >>> rows = regression_rows(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[1.0], [3.0], [4.0]]), ["y"])
        >>> [(r["target"], round(r["mae"], 4), round(r["rmse"], 4), round(r["r2"], 4)) for r in rows]
        [('y', 0.3333, 0.5774, 0.7857)]
    """
    rows = []
    for j, name in enumerate(names):
        p, t = predicted[:, j].double(), true[:, j].double()
        error = p - t
        total = float(((t - t.mean()) ** 2).sum())
        r2 = 1 - float((error**2).sum()) / total if total > 0 else math.nan
        rows.append(
            {
                "target": name,
                "mae": float(error.abs().mean()),
                "rmse": float(error.pow(2).mean().sqrt()),
                "r2": r2,
                "samples": len(t),
            }
        )
    return rows


def plot_predicted_vs_true(predicted: torch.Tensor, true: torch.Tensor, names: list[str], path: Path) -> Path:
    """A scatter of predicted against true values per target, with the identity line and MAE/RMSE/R² in the title."""
    from lit_transfer import plots

    rows = regression_rows(predicted, true, names)
    fig, axes = plots._figure(1, len(names), width=4.2 * len(names), row_height=4.0)
    for j, (ax, row) in enumerate(zip(axes[0], rows)):
        t, p = true[:, j].tolist(), predicted[:, j].tolist()
        low, high = min(t + p), max(t + p)
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="predicted = true")
        ax.scatter(t, p, s=12, alpha=0.7)
        ax.set_xlabel(f"true {row['target']}")
        ax.set_ylabel(f"predicted {row['target']}")
        ax.set_title(
            f"{row['target']}: MAE {row['mae']:.3g}, RMSE {row['rmse']:.3g}, R² {row['r2']:.3f} (n={row['samples']})",
            fontsize="small",
        )
        ax.legend(loc="upper left", fontsize="x-small")
    return plots._save(fig, path)
