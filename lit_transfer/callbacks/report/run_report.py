"""RunReport: what a run did, as plots and a CSV beside the logs, and a short summary at the end.

The callback records its own data, so it works with any logger (or none) and any classification LightningModule:

* per optimizer step: the learning rate of every param group (by its ``name``, including a warmup factor that
  :class:`~lit_transfer.callbacks.LRScaling` applies only inside ``optimizer.step``), the global batch (the train
  loader's batch size x accumulation x world size; the samples seen when the loader has no batch size), the
  number of trainable parameters and layer groups, and the optimizer's class;
* per epoch: every scalar in ``trainer.callback_metrics`` (validation values only in epochs that validated);
* on ``test``: a confusion matrix of a classifier's predictions (the per-label average precision of a multi-label
  model; the predicted against the true values of a regression model, with MAE, RMSE and R² per target, in the
  targets' original units), from the outputs the module computed itself (the
  ``test_step`` output, else the output of its own forward call, captured by a forward hook), so nothing is
  computed twice. A module whose ``test_step`` neither returns logits nor calls ``self(x)`` is run once more
  on ``x``. Test batches are ``(x, y, ...)`` tuples or dicts with ``image`` and ``label``/``target`` keys. The
  counts are a torchmetrics ``MulticlassConfusionMatrix``, which sums them over the processes of a DDP run.

At the end of ``fit`` rank zero writes ``learning_curves.png`` (the loss and the task's monitored metric: accuracy,
``map`` for multi-label, ``mae`` and each target's MAE for regression), ``schedule.png``, ``epochs.csv`` (one row per
epoch) and ``steps.csv`` (one row per step); at the end of ``test`` it adds ``confusion_matrix.png``,
``confusion_matrix.csv`` (counts; a row per true class, a column per predicted class) and a ``test`` row to
``epochs.csv``; for a multi-label model ``label_ap.csv`` instead of the confusion matrix, for a regression model
``regression.csv`` and ``predicted_vs_true.png``. (The names leave ``metrics.csv`` to Lightning's ``CSVLogger``,
which writes into the same folder.) History is kept in the checkpoint, so a resumed run plots the whole run.

The parts live beside this module, one concern each: ``history`` (the rows), ``confusion`` (the test confusion
matrix), ``tasks`` (the multi-label and regression test reports), ``files`` (CSVs and plots), ``summary`` (the
printed text).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lit_transfer.callbacks.report import summary
from lit_transfer.callbacks.report.confusion import TestConfusion, class_names_for
from lit_transfer.callbacks.report.files import (
    curve_metrics,
    write_fit_files,
    write_label_ap,
    write_regression,
    write_test_files,
)
from lit_transfer.callbacks.report.history import RunHistory
from lit_transfer.callbacks.report.segmentation import TestSegmentation
from lit_transfer.callbacks.report.tasks import TestLabelAP, TestRegression, logged_label_ap, regression_rows
from lit_transfer.tasks import class_names_of, target_names_of, task_of

__all__ = ["RunReport"]


class RunReport(Callback):
    """Plots, a metrics CSV and a summary of each ``fit`` and ``test``, written beside the logs.

    Args:
        output_dir: Folder for the report (created). Default: the Trainer's ``log_dir`` (the first logger's
            version folder, else ``default_root_dir``), resolved when the report is written.
        plots: Write the PNG plots (learning curves, schedule, confusion matrix).
        summary: Print a run summary at the end of ``fit`` and ``test``: best checkpoint and score, final
            metrics, where the logs and the report are.
        confusion_matrix: Collect predictions during ``test`` for the confusion matrix (the per-label AP of a
            multi-label model, the predicted-vs-true values of a regression model).
        class_names: Names for the confusion matrix; default: the module's ``class_names`` attribute (as
            :class:`~lit_transfer.TransferClassifier` has), else the DataModule's ``class_names``/``classes``,
            else class indices.

    Attributes:
        confusion: The counts of the last ``test`` (rows true, columns predicted classes), or ``None``.
        label_ap: A multi-label model's last ``test``: ``{label: average precision}`` (NaN for a label without
            positives), or ``None``.
        regression: A regression model's last ``test``: one dict per target (``target``, ``mae``, ``rmse``,
            ``r2``, ``samples``), or ``None``.
        written: The files written at the end of the last ``fit`` or ``test``.
        curves: The metrics the last ``fit``'s learning curves show: the loss and the metric ``best.ckpt`` is
            chosen by for the module's task (:data:`lit_transfer.tasks.MONITOR`), with each target's MAE for a
            regression of several targets; ``None`` before a ``fit`` or when the run logged none of them.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[RunReport(output_dir="runs/report")], logger=False)  # doctest: +SKIP
        >>> RunReport(plots=False)
        RunReport(output_dir=None, plots=False, summary=True)
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        plots: bool = True,
        summary: bool = True,
        confusion_matrix: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if output_dir is not None and not isinstance(output_dir, (str, Path)):
            raise ValueError(f"`output_dir` must be a folder path or None, got {output_dir!r}.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.plots = bool(plots)
        self.summary = bool(summary)
        self.confusion_matrix = bool(confusion_matrix)
        self.class_names = list(class_names) if class_names is not None else None
        self.history = RunHistory()
        self.confusion: torch.Tensor | None = None
        self.label_ap: dict[str, float] | None = None
        self.regression: list[dict[str, Any]] | None = None
        self.written: list[Path] = []
        self.curves: list[str] | None = None
        self._test_confusion = TestConfusion()
        self._test_result: Any = None

    def __repr__(self) -> str:
        out = None if self.output_dir is None else str(self.output_dir)
        return f"{type(self).__name__}(output_dir={out!r}, plots={self.plots}, summary={self.summary})"

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """One row per training epoch: ``stage``, ``epoch``, ``step`` and every logged scalar."""
        return self.history.epochs

    @property
    def steps(self) -> list[dict[str, Any]]:
        """One row per optimizer step: ``step``, ``epoch``, ``lr/<group>``, ``batch_size``, ``optimizer``, ..."""
        return self.history.steps

    @property
    def test_metrics(self) -> dict[str, float]:
        """The ``test*`` scalars of the last ``test``."""
        return self.history.test_metrics

    # -------------------------------------------------------------------------------------------- fit
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # a resumed fit gets its history back from `load_state_dict`, called after `setup`
            self.history.reset()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.history.count_batch(batch)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.history.record_step(trainer, pl_module, optimizer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.history.record_validation(trainer)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.history.record_epoch(trainer)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self._resolve_dir(trainer)
        if not trainer.is_global_zero:
            return
        rows, task = self.history.metric_rows(), task_of(pl_module)
        targets = target_names_of(pl_module) if task == "regression" else []
        self.curves = curve_metrics(task, [r for r in rows if r.get("stage") != "test"], targets)
        self.written = write_fit_files(out, rows, self.history.steps, self.plots, self.curves)
        if self.summary:
            rank_zero_info(self.fit_summary(trainer, out))

    # -------------------------------------------------------------------------------------------- test
    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.confusion, self.label_ap, self.regression, self._test_result = None, None, None, None
        self.history.test_metrics = {}
        task = task_of(pl_module)
        collectors = {"multilabel": TestLabelAP, "regression": TestRegression, "segmentation": TestSegmentation}
        collector = collectors.get(task, TestConfusion)
        if type(self._test_confusion) is not collector:
            self._test_confusion.stop()
            self._test_confusion = collector()
        if self.confusion_matrix:
            self._test_confusion.start(pl_module)

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.confusion_matrix:
            self._test_confusion.update(trainer, pl_module, outputs, batch)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.confusion_matrix:  # every process below: torchmetrics sums the counts across a DDP run here
            return
        result = self._test_confusion.compute(trainer, pl_module.device)
        if isinstance(self._test_confusion, (TestLabelAP, TestRegression, TestSegmentation)):
            self._test_result = result
        else:
            self.confusion = result

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._test_confusion.stop()
        out = self._resolve_dir(trainer)
        self.history.record_test(trainer)
        if not trainer.is_global_zero:
            return
        counts = self.confusion.tolist() if self.confusion is not None else None
        names = self._class_names(trainer, pl_module, len(counts)) if counts is not None else []
        self.written = write_test_files(out, self.history.metric_rows(), counts, names, self.plots)
        self.written += self._write_task_files(out, trainer, pl_module)
        if self.summary:
            rank_zero_info(self.test_summary(trainer, out))

    def _write_task_files(self, out: Path, trainer: Trainer, pl_module: LightningModule) -> list[Path]:
        """``label_ap.csv`` of a multi-label model, ``regression.csv`` and its plot of a regression model."""
        if self._test_result is None:
            return []
        if isinstance(self._test_confusion, TestSegmentation):  # per-class IoU and the image/truth/prediction grid
            return self._test_confusion.write(out, self._test_result, pl_module, self.plots)
        if isinstance(self._test_confusion, TestLabelAP):
            ap, positives = self._test_result
            names = class_names_of(pl_module, len(positives))
            ap = ap if ap is not None else logged_label_ap(trainer, names, positives)
            self.label_ap = dict(zip(names, ap))
            return write_label_ap(out, ap, positives, names)
        predicted, true = self._test_result
        names = target_names_of(pl_module)
        names = names if len(names) == true.shape[1] else [f"value_{i}" for i in range(true.shape[1])]
        self.regression = regression_rows(predicted, true, names)
        return write_regression(out, self.regression, predicted, true, self.plots)

    # -------------------------------------------------------------------------------------------- helpers
    def _resolve_dir(self, trainer: Trainer) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        log_dir = trainer.log_dir  # broadcast from rank zero: every rank must ask
        return Path(log_dir if log_dir is not None else trainer.default_root_dir)

    def _class_names(self, trainer: Trainer, pl_module: LightningModule, size: int) -> list[str]:
        datamodule = getattr(trainer, "datamodule", None)
        candidates = (
            self.class_names,
            getattr(pl_module, "class_names", None),
            getattr(datamodule, "class_names", None),
            getattr(datamodule, "classes", None),
        )
        return class_names_for(size, candidates)

    def fit_summary(self, trainer: Trainer, out: Path) -> str:
        """The text printed at the end of ``fit``: checkpoints, final metrics, where logs and report are."""
        return summary.fit_summary(trainer, out, self.history.epochs, self.written)

    def test_summary(self, trainer: Trainer, out: Path) -> str:
        """The text printed at the end of ``test``: test metrics, where logs and report are."""
        samples = int(self.confusion.sum()) if self.confusion is not None else None
        extra = summary.task_lines(self.label_ap, self.regression)
        return summary.test_summary(trainer, out, self.history.test_metrics, samples, self.written, extra)

    # -------------------------------------------------------------------------------------------- resume
    @override
    def state_dict(self) -> dict[str, Any]:
        return self.history.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.load_state_dict(state_dict)
