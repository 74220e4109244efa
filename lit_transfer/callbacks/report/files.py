"""The files of :class:`~lit_transfer.callbacks.RunReport`: CSV tables and the plots of :mod:`lit_transfer.plots`.

``epochs.csv`` (a row per epoch, then a ``test`` row), ``steps.csv`` (a row per optimizer step),
``confusion_matrix.csv`` (counts; a row per true class, a column per predicted class), ``label_ap.csv`` (a
multi-label model's average precision per label), ``regression.csv`` (a regression model's MAE, RMSE and R² per
target), and the PNGs ``learning_curves.png``, ``schedule.png``, ``confusion_matrix.png``,
``predicted_vs_true.png``. The names leave ``metrics.csv`` to
Lightning's ``CSVLogger``, which writes into the same folder.

Every file is written atomically (:mod:`lit_transfer.files.atomic`): a report file is complete or absent (the previous
one kept), never cut short by an interruption or a full disk.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from lit_transfer import plots
from lit_transfer.files.atomic import atomic_open, atomic_path
from lit_transfer.tasks import MONITOR

__all__ = [
    "confusion_rows",
    "curve_metrics",
    "label_ap_rows",
    "write_csv",
    "write_fit_files",
    "write_label_ap",
    "write_regression",
    "write_test_files",
]


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` with a header of every key in first-seen order (missing cells empty); return ``path``.

    Example:
        >>> import pathlib, tempfile
        >>> path = write_csv(pathlib.Path(tempfile.mkdtemp()) / "t.csv", [{"a": 1}, {"a": 2, "b": 3}])
        >>> path.read_text().splitlines()
        ['a,b', '1,', '2,3']
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plot(plot: Callable[..., Any], *args: Any, path: Path) -> Path:
    """Call ``plot(*args, <temporary path>)`` and rename its file to ``path`` once it is complete."""
    with atomic_path(path, suffix=path.suffix) as temp:
        plot(*args, temp)
    return path


def confusion_rows(counts: Sequence[Sequence[int]], names: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``confusion_matrix.csv``: ``true/predicted`` (the true class), then a column per predicted class.

    Example:
        >>> confusion_rows([[5, 1], [2, 4]], ["cat", "dog"])
        [{'true/predicted': 'cat', 'cat': 5, 'dog': 1}, {'true/predicted': 'dog', 'cat': 2, 'dog': 4}]
    """
    return [{"true/predicted": name, **dict(zip(names, row))} for name, row in zip(names, counts)]


def curve_metrics(task: str, epochs: Sequence[Mapping[str, Any]], targets: Sequence[str] = ()) -> list[str] | None:
    """The panels of a task's learning curves: the loss and the metric ``best.ckpt`` is chosen by.

    The metric is :data:`lit_transfer.tasks.MONITOR`'s (``acc`` for a classifier, ``map`` for multi-label, ``mae`` for
    regression); a regression with several ``targets`` adds each target's ``mae_<target>`` (``mae`` mixes their
    units). Only names the rows hold are kept; ``None`` (every metric found) when none is.

    Example:
        >>> rows = [{"epoch": 0, "train_loss": 0.9, "val_loss": 0.8, "val_mae": 2.0, "val_mae_age": 3.0, "val_r2": 0.1}]
        >>> curve_metrics("regression", rows, ["age"]), curve_metrics("multilabel", rows)
        (['loss', 'mae', 'mae_age'], ['loss'])
    """
    found = plots.metric_names(epochs)
    monitored = MONITOR.get(task, MONITOR["multiclass"])[0].removeprefix("val_")
    wanted = ["loss", monitored, *(f"mae_{t}" for t in targets if task == "regression")]
    chosen = [name for name in dict.fromkeys(wanted) if name in found]
    return chosen or None


def write_fit_files(
    out: Path,
    metric_rows: Sequence[dict[str, Any]],
    steps: Sequence[dict[str, Any]],
    with_plots: bool,
    curves: Sequence[str] | None = None,
) -> list[Path]:
    """``epochs.csv``, ``steps.csv`` (when there are steps) and, with ``with_plots``, their plots; return the paths.

    ``curves`` names the learning curves' panels (see :func:`curve_metrics`; default: loss and accuracy).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / "epochs.csv", metric_rows)]
    if steps:
        written.append(write_csv(out / "steps.csv", steps))
    if with_plots:
        epochs = [row for row in metric_rows if row.get("stage") != "test"]
        if any(k.startswith(("train_", "val_")) for row in epochs for k in row):
            chosen = list(curves) if curves else None
            curves_plot = partial(plots.plot_learning_curves, metrics=chosen)
            written.append(_plot(curves_plot, epochs, path=out / "learning_curves.png"))
        if steps:
            written.append(_plot(plots.plot_schedule, list(steps), path=out / "schedule.png"))
    return written


def write_test_files(
    out: Path,
    metric_rows: Sequence[dict[str, Any]],
    counts: Sequence[Sequence[int]] | None,
    names: Sequence[str],
    with_plots: bool,
) -> list[Path]:
    """``epochs.csv`` with its ``test`` row, ``confusion_matrix.csv`` and ``.png``; return the paths.

    The confusion matrix files are written when there are ``counts``, the PNG only ``with_plots``.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / "epochs.csv", metric_rows)]
    if counts is not None:
        written.append(write_csv(out / "confusion_matrix.csv", confusion_rows(counts, names)))
        if with_plots:
            written.append(_plot(plots.plot_confusion_matrix, counts, list(names), path=out / "confusion_matrix.png"))
    return written


def label_ap_rows(ap: Sequence[float], positives: Sequence[int], names: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``label_ap.csv``: ``label``, ``average_precision`` (empty without positives), ``positives``.

    Example:
        >>> [list(row.values()) for row in label_ap_rows([0.9, float("nan")], [4, 0], ["cat", "dog"])]
        [['cat', 0.9, 4], ['dog', '', 0]]
    """
    return [
        {"label": name, "average_precision": value if value == value else "", "positives": count}
        for name, value, count in zip(names, ap, positives)
    ]


def write_label_ap(out: Path, ap: Sequence[float], positives: Sequence[int], names: Sequence[str]) -> list[Path]:
    """``label_ap.csv``; return its path in a list."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(out / "label_ap.csv", label_ap_rows(ap, positives, names))]


def write_regression(
    out: Path, rows: Sequence[dict[str, Any]], predicted: Any, true: Any, with_plots: bool
) -> list[Path]:
    """``regression.csv`` (the ``rows``: MAE, RMSE, R² per target) and, ``with_plots``, ``predicted_vs_true.png``."""
    from lit_transfer.callbacks.report.tasks import plot_predicted_vs_true

    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(out / "regression.csv", rows)]
    if with_plots and len(true):
        names = [str(row["target"]) for row in rows]
        written.append(_plot(plot_predicted_vs_true, predicted, true, names, path=out / "predicted_vs_true.png"))
    return written
