"""The text :class:`~lit_transfer.callbacks.RunReport` prints at the end of ``fit`` and ``test``.

::

    Run summary (fit, 5 epochs, 85 steps)
      best checkpoint: .../checkpoints/best.ckpt (val_acc=0.9851)
      last checkpoint: .../checkpoints/last.ckpt
      final metrics (epoch 4): train_acc=0.9944, train_loss=0.0521, val_acc=0.9851, val_loss=0.05662
      logs: CSVLogger .../version_0
      report: .../version_0 (epochs.csv, steps.csv, learning_curves.png, schedule.png)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer

__all__ = ["fit_summary", "format_metrics", "task_lines", "test_summary"]


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``name=value`` pairs sorted by name, four significant digits.

    Example:
        >>> format_metrics({"val_loss": 0.123456, "train_acc": 0.5}), format_metrics({})
        ('train_acc=0.5, val_loss=0.1235', '(none logged)')
    """
    if not metrics:
        return "(none logged)"
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def fit_summary(trainer: Trainer, out: Path, epochs: Sequence[Mapping[str, Any]], written: Sequence[Path]) -> str:
    """The end-of-``fit`` text: checkpoints, the last epoch's metrics, where the logs and the report are.

    Args:
        trainer: The Trainer that ran ``fit`` (checkpoints, loggers, epoch and step counts).
        out: The report folder.
        epochs: The epoch rows; the metrics of the last are shown, without its ``lr-*`` values.
        written: The report's files.
    """
    lines = [f"Run summary (fit, {trainer.current_epoch} epochs, {trainer.global_step} steps)"]
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_path", "")
    if best:
        score = getattr(checkpoint, "best_model_score", None)
        monitor = getattr(checkpoint, "monitor", None)
        shown = f" ({monitor}={float(score):.4g})" if score is not None and monitor else ""
        lines.append(f"  best checkpoint: {best}{shown}")
    last = _newest_checkpoint(trainer)
    if last and last != best:
        lines.append(f"  last checkpoint: {last}")
    if epochs:
        final = {
            k: v
            for k, v in epochs[-1].items()
            if k not in ("stage", "epoch", "step") and not k.startswith("lr-")  # LRs: schedule.png, steps.csv
        }
        lines.append(f"  final metrics (epoch {epochs[-1]['epoch']}): {format_metrics(final)}")
    lines.extend(_locations(trainer, out, written))
    return "\n".join(lines)


def test_summary(
    trainer: Trainer,
    out: Path,
    test_metrics: Mapping[str, float],
    samples: int | None,
    written: Sequence[Path],
    extra: Sequence[str] = (),
) -> str:
    """The end-of-``test`` text: test metrics, test samples, ``extra`` lines, where the logs and the report are.

    ``samples`` (the number counted in the confusion matrix) is left out when ``None``.
    """
    lines = ["Run summary (test)", f"  test metrics: {format_metrics(test_metrics)}"]
    if samples is not None:
        lines.append(f"  test samples: {samples}")
    lines.extend(extra)
    lines.extend(_locations(trainer, out, written))
    return "\n".join(lines)


def _locations(trainer: Trainer, out: Path, written: Sequence[Path]) -> list[str]:
    lines = []
    loggers = trainer.loggers
    if loggers:
        logs = ", ".join(f"{type(lg).__name__} {getattr(lg, 'log_dir', None) or lg.save_dir}" for lg in loggers)
        lines.append(f"  logs: {logs}")
    files = ", ".join(p.name for p in written)
    lines.append(f"  report: {out} ({files})")
    return lines


def _newest_checkpoint(trainer: Trainer) -> str:
    """The checkpoint written last by any ``ModelCheckpoint``: a ``save_last`` file, else the newest top-k file."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        paths += [getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")]
    existing = [p for p in paths if p and os.path.isfile(p)]
    return max(existing, key=os.path.getmtime) if existing else ""


def task_lines(label_ap: Mapping[str, float] | None, regression: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The summary lines of a multi-label test (AP per label, macro mAP) or a regression test (MAE, RMSE, R²).

    Example:
        >>> task_lines({"cat": 0.9, "dog": 0.7}, None)
        ['  average precision per label (macro mAP 0.8): cat=0.9, dog=0.7']
        >>> task_lines(None, [{"target": "age", "mae": 1.5, "rmse": 2.0, "r2": 0.75, "samples": 8}])
        ['  age: MAE=1.5, RMSE=2, R²=0.75 (8 samples)']
    """
    lines = []
    if label_ap:
        present = [v for v in label_ap.values() if not math.isnan(v)]
        macro = sum(present) / len(present) if present else math.nan
        per_label = ", ".join(f"{name}={value:.4g}" for name, value in label_ap.items())
        lines.append(f"  average precision per label (macro mAP {macro:.4g}): {per_label}")
    for row in regression or []:
        lines.append(
            f"  {row['target']}: MAE={float(row['mae']):.4g}, RMSE={float(row['rmse']):.4g},"
            f" R²={float(row['r2']):.4g} ({row['samples']} samples)"
        )
    return lines
