"""RunReport: what a run did, as plots and a CSV beside the logs, and a short summary at the end.

The callback records its own data, so it works with any logger (or none) and any classification LightningModule:

* per optimizer step: the learning rate of every param group (by its ``name``, including a warmup factor that
  :class:`~lit_transfer.callbacks.LRScaling` applies only inside ``optimizer.step``), the global batch (the train
  loader's batch size x accumulation x world size; the samples seen when the loader has no batch size), the
  number of trainable parameters and layer groups, and the optimizer's class;
* per epoch: every scalar in ``trainer.callback_metrics`` (validation values only in epochs that validated);
* on ``test``: a confusion matrix of the model's predictions, from the logits the module computed itself (the
  ``test_step`` output, else the output of its own forward call, captured by a forward hook), so nothing is
  computed twice. A module whose ``test_step`` neither returns logits nor calls ``self(x)`` is run once more
  on ``x``. Test batches are ``(x, y, ...)`` tuples or dicts with ``image`` and ``label``/``target`` keys.

At the end of ``fit`` rank zero writes ``learning_curves.png``, ``schedule.png``, ``epochs.csv`` (one row per
epoch) and ``steps.csv`` (one row per step); at the end of ``test`` it adds ``confusion_matrix.png``,
``confusion_matrix.csv`` (counts; a row per true class, a column per predicted class) and a ``test`` row to
``epochs.csv``. (The names leave ``metrics.csv`` to Lightning's ``CSVLogger``, which writes into the same folder.)
History is kept in the checkpoint, so a resumed run plots the whole run.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lit_transfer import plots

__all__ = ["RunReport"]

_LABEL_KEYS = ("label", "labels", "target", "targets", "y")
_LOGIT_KEYS = ("logits", "preds", "probs")


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _inputs_and_labels(batch: Any) -> tuple[Any, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        x = batch.get("image", batch.get("x"))
        labels = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
    elif isinstance(batch, (list, tuple)) and batch:
        x, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        x, labels = batch, None
    return x, labels if isinstance(labels, torch.Tensor) else None


def _callbacks(trainer: Trainer) -> list[Callback]:
    return list(getattr(trainer, "callbacks", []))


def _batch_len(batch: Any) -> int:
    x, _ = _inputs_and_labels(batch)
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return int(x.shape[0])
    return len(x) if isinstance(x, Sequence) else 0


class RunReport(Callback):
    """Plots, a metrics CSV and a summary of each ``fit`` and ``test``, written beside the logs.

    Args:
        output_dir: Folder for the report (created). Default: the Trainer's ``log_dir`` (the first logger's
            version folder, else ``default_root_dir``), resolved when the report is written.
        plots: Write the PNG plots (learning curves, schedule, confusion matrix).
        summary: Print a run summary at the end of ``fit`` and ``test``: best checkpoint and score, final
            metrics, where the logs and the report are.
        confusion_matrix: Collect predictions during ``test`` for the confusion matrix.
        class_names: Names for the confusion matrix; default: the module's ``class_names`` attribute (as
            :class:`~lit_transfer.TransferClassifier` has), else the DataModule's ``class_names``/``classes``,
            else class indices.

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
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.test_metrics: dict[str, float] = {}
        self.confusion: torch.Tensor | None = None
        self.written: list[Path] = []
        self._pending_val: dict[str, float] = {}
        self._samples = 0
        self._last_step = -1
        self._trainable_count: tuple[int, int] | None = None
        self._captured: torch.Tensor | None = None
        self._hook: Any = None
        self._warned_labels = False

    def __repr__(self) -> str:
        out = None if self.output_dir is None else str(self.output_dir)
        return f"{type(self).__name__}(output_dir={out!r}, plots={self.plots}, summary={self.summary})"

    # -------------------------------------------------------------------------------------------- recording
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # a resumed fit gets its history back from `load_state_dict`, called after `setup`
            self.epochs, self.steps, self._pending_val = [], [], {}
            self._samples, self._last_step, self._trainable_count = 0, -1, None

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._samples += _batch_len(batch)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # several optimizers step together: one row
            return
        self._last_step = step
        row: dict[str, Any] = {"step": step, "epoch": trainer.current_epoch}
        row.update(self._learning_rates(trainer))
        row["batch_size"] = self._global_batch(trainer)
        self._samples = 0
        if self._trainable_count is None or self._trainable_count[0] != trainer.current_epoch:
            # counted at the first step of each epoch, after every epoch-start hook (freezing phases) has run
            count = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
            self._trainable_count = (trainer.current_epoch, count)
        row["trainable_params"] = self._trainable_count[1]
        groups = self._trainable_groups(trainer)
        if groups is not None:
            row["trainable_groups"] = groups
        row["optimizer"] = "+".join(type(opt).__name__ for opt in trainer.optimizers) or type(optimizer).__name__
        self.steps.append(row)

    def _global_batch(self, trainer: Trainer) -> int:
        """The nominal global batch of this step (loader batch x accumulation x world size), else samples seen."""
        loader = trainer.train_dataloader
        if isinstance(loader, (list, tuple)) and loader:
            loader = loader[0]
        size = getattr(loader, "batch_size", None) or getattr(
            getattr(loader, "batch_sampler", None), "batch_size", None
        )
        if isinstance(size, int) and size > 0:
            return size * trainer.accumulate_grad_batches * trainer.world_size
        return self._samples * trainer.world_size

    @staticmethod
    def _learning_rates(trainer: Trainer) -> dict[str, float]:
        """LR of every param group as the coming step uses it; ``<name>.no_decay`` groups at the same LR folded."""
        from lit_transfer.callbacks.lr_scaling import LRScaling

        factor = 1.0
        for callback in _callbacks(trainer):
            if isinstance(callback, LRScaling):
                factor *= callback.warmup_factor(trainer.global_step)
        lrs: dict[str, float] = {}
        for opt_index, optimizer in enumerate(trainer.optimizers):
            prefix = "" if len(trainer.optimizers) == 1 else f"opt{opt_index}/"
            for index, group in enumerate(optimizer.param_groups):
                name = f"{prefix}{group.get('name', f'group{index}')}"
                lr = float(group["lr"]) * factor
                base = name.removesuffix(".no_decay")
                if base != name and math.isclose(lrs.get(f"lr/{base}", math.nan), lr):
                    continue
                key = f"lr/{name}"
                while key in lrs:
                    key += "'"
                lrs[key] = lr
        return lrs

    @staticmethod
    def _trainable_groups(trainer: Trainer) -> int | None:
        from lit_transfer.callbacks.layer_freezing import LayerFreezing

        for callback in _callbacks(trainer):
            if isinstance(callback, LayerFreezing) and callback.trainable_groups is not None:
                return int(callback.trainable_groups)
        return None

    @staticmethod
    def _metrics(trainer: Trainer) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for key, value in trainer.callback_metrics.items():
            number = _scalar(value)
            if number is not None and not key.endswith("_step"):
                metrics[key.removesuffix("_epoch")] = number
        return metrics

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._pending_val = {k: v for k, v in self._metrics(trainer).items() if k.startswith("val")}

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {k: v for k, v in self._metrics(trainer).items() if not k.startswith(("val", "test"))}
        row = {"stage": "fit", "epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        row.update(self._pending_val)
        self._pending_val = {}
        self.epochs.append(row)

    # ------------------------------------------------------------------------------------- confusion matrix
    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.confusion, self._captured, self._warned_labels = None, None, False
        self.test_metrics = {}
        if self.confusion_matrix:
            self._hook = pl_module.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._captured = output.detach()

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
        if not self.confusion_matrix:
            return
        captured, self._captured = self._captured, None
        x, labels = _inputs_and_labels(batch)
        if labels is None or labels.ndim != 1:
            if not self._warned_labels:
                rank_zero_warn("RunReport: test batches carry no class-index labels; no confusion matrix is drawn.")
                self._warned_labels = True
            return
        logits = self._logits(outputs, captured, len(labels))
        if logits is None:
            with torch.no_grad():
                logits = pl_module(x)
        preds = logits.argmax(dim=-1) if logits.ndim == 2 else logits.long()
        self._update(preds.reshape(-1), labels.reshape(-1), logits.shape[-1] if logits.ndim == 2 else 0)

    @staticmethod
    def _logits(outputs: Any, captured: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if isinstance(outputs, Mapping):
            outputs = next((outputs[k] for k in _LOGIT_KEYS if k in outputs), None)
        for candidate in (outputs, captured):
            if not isinstance(candidate, torch.Tensor) or candidate.ndim not in (1, 2) or len(candidate) != n:
                continue
            if candidate.ndim == 2 or not candidate.is_floating_point():
                return candidate.detach()
        return None

    def _update(self, preds: torch.Tensor, labels: torch.Tensor, num_logits: int) -> None:
        labels = labels.to(preds.device).long()
        size = max(num_logits, int(preds.max()) + 1, int(labels.max()) + 1)
        if self.confusion is None:
            self.confusion = torch.zeros(size, size, dtype=torch.long, device=preds.device)
        elif size > len(self.confusion):
            grown = torch.zeros(size, size, dtype=torch.long, device=preds.device)
            grown[: len(self.confusion), : len(self.confusion)] = self.confusion
            self.confusion = grown
        flat = labels * len(self.confusion) + preds
        self.confusion += torch.bincount(flat, minlength=len(self.confusion) ** 2).view_as(self.confusion)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.confusion_matrix and trainer.world_size > 1:
            local = self.confusion if self.confusion is not None else torch.zeros(0, dtype=torch.long)
            sizes = trainer.strategy.all_gather(torch.tensor(len(local), device=pl_module.device))
            size = int(sizes.max())
            padded = torch.zeros(size, size, dtype=torch.float64, device=pl_module.device)
            padded[: len(local), : len(local)] = local.to(padded)
            self.confusion = trainer.strategy.reduce(padded, reduce_op="sum").round().long()

    # -------------------------------------------------------------------------------------------- writing
    def _resolve_dir(self, trainer: Trainer) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        log_dir = trainer.log_dir  # broadcast from rank zero: every rank must ask
        return Path(log_dir if log_dir is not None else trainer.default_root_dir)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self._resolve_dir(trainer)
        if not trainer.is_global_zero:
            return
        out.mkdir(parents=True, exist_ok=True)
        written = [self._write_csv(out / "epochs.csv", self._metric_rows())]
        if self.steps:
            written.append(self._write_csv(out / "steps.csv", self.steps))
        if self.plots:
            if any(k.startswith(("train_", "val_")) for row in self.epochs for k in row):
                written.append(plots.plot_learning_curves(self.epochs, out / "learning_curves.png"))
            if self.steps:
                written.append(plots.plot_schedule(self.steps, out / "schedule.png"))
        self.written = written
        if self.summary:
            rank_zero_info(self.fit_summary(trainer, out))

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        out = self._resolve_dir(trainer)
        self.test_metrics = {k: v for k, v in self._metrics(trainer).items() if k.startswith("test")}
        if not trainer.is_global_zero:
            return
        out.mkdir(parents=True, exist_ok=True)
        written = [self._write_csv(out / "epochs.csv", self._metric_rows())]
        if self.confusion is not None:
            names = self._class_names(trainer, pl_module, len(self.confusion))
            counts = self.confusion.cpu().tolist()
            rows = [{"true/predicted": name, **dict(zip(names, row))} for name, row in zip(names, counts)]
            written.append(self._write_csv(out / "confusion_matrix.csv", rows))
            if self.plots:
                written.append(plots.plot_confusion_matrix(counts, names, out / "confusion_matrix.png"))
        self.written = written
        if self.summary:
            rank_zero_info(self.test_summary(trainer, out))

    def _metric_rows(self) -> list[dict[str, Any]]:
        rows = list(self.epochs)
        if self.test_metrics:
            last = self.epochs[-1] if self.epochs else {}
            rows.append(
                {"stage": "test", "epoch": last.get("epoch", ""), "step": last.get("step", ""), **self.test_metrics}
            )
        return rows

    @staticmethod
    def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def _class_names(self, trainer: Trainer, pl_module: LightningModule, size: int) -> list[str]:
        datamodule = getattr(trainer, "datamodule", None)
        candidates = (
            self.class_names,
            getattr(pl_module, "class_names", None),
            getattr(datamodule, "class_names", None),
            getattr(datamodule, "classes", None),
        )
        for names in candidates:
            if isinstance(names, Sequence) and not isinstance(names, str) and len(names) == size:
                return [str(n) for n in names]
        return [str(i) for i in range(size)]

    # -------------------------------------------------------------------------------------------- summaries
    def fit_summary(self, trainer: Trainer, out: Path) -> str:
        """The text printed at the end of ``fit``: checkpoints, final metrics, where logs and report are."""
        lines = [f"Run summary (fit, {trainer.current_epoch} epochs, {trainer.global_step} steps)"]
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        if best:
            score = getattr(checkpoint, "best_model_score", None)
            monitor = getattr(checkpoint, "monitor", None)
            shown = f" ({monitor}={float(score):.4g})" if score is not None and monitor else ""
            lines.append(f"  best checkpoint: {best}{shown}")
        last = _newest_checkpoint(trainer, best)
        if last and last != best:
            lines.append(f"  last checkpoint: {last}")
        if self.epochs:
            final = {
                k: v
                for k, v in self.epochs[-1].items()
                if k not in ("stage", "epoch", "step") and not k.startswith("lr-")  # LRs: schedule.png, steps.csv
            }
            lines.append(f"  final metrics (epoch {self.epochs[-1]['epoch']}): {_format(final)}")
        lines.extend(self._locations(trainer, out))
        return "\n".join(lines)

    def test_summary(self, trainer: Trainer, out: Path) -> str:
        """The text printed at the end of ``test``: test metrics, where logs and report are."""
        lines = ["Run summary (test)", f"  test metrics: {_format(self.test_metrics)}"]
        if self.confusion is not None:
            lines.append(f"  test samples: {int(self.confusion.sum())}")
        lines.extend(self._locations(trainer, out))
        return "\n".join(lines)

    def _locations(self, trainer: Trainer, out: Path) -> list[str]:
        lines = []
        loggers = trainer.loggers
        if loggers:
            logs = ", ".join(f"{type(lg).__name__} {getattr(lg, 'log_dir', None) or lg.save_dir}" for lg in loggers)
            lines.append(f"  logs: {logs}")
        files = ", ".join(p.name for p in self.written)
        lines.append(f"  report: {out} ({files})")
        return lines

    # -------------------------------------------------------------------------------------------- resume
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(r) for r in self.epochs], "steps": [dict(r) for r in self.steps]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [dict(r) for r in state_dict.get("epochs", [])]
        self.steps = [dict(r) for r in state_dict.get("steps", [])]
        self._last_step = self.steps[-1]["step"] if self.steps else -1


def _newest_checkpoint(trainer: Trainer, best: str) -> str:
    """The checkpoint written last by any ``ModelCheckpoint``: a ``save_last`` file, else the newest top-k file."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        paths += [getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")]
    existing = [p for p in paths if p and os.path.isfile(p)]
    return max(existing, key=os.path.getmtime) if existing else ""


def _format(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "(none logged)"
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
