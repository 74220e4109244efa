from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_transfer.plots import plot_confusion_matrix, plot_learning_curves, plot_schedule

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size < 200_000


def test_learning_curves_accepts_lightning_names_gaps_and_csv_strings(tmp_path: Path) -> None:
    rows = [
        {"epoch": 0, "train_loss_epoch": 1.0, "train_acc": 0.5, "val_loss": math.nan},
        {"epoch": 1, "train_loss_epoch": 0.8, "train_acc": 0.6, "val_loss": 0.9, "val_acc": 0.55},
        {"epoch": 2, "train_loss_epoch": 0.6, "train_acc": 0.7, "val_loss": 0.85, "val_acc": 0.6, "stage": "fit"},
    ]
    assert _is_png(plot_learning_curves(rows, tmp_path / "a" / "curves.png"))
    with (tmp_path / "epochs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[-1], "test_acc"])
        writer.writeheader()
        writer.writerows(rows)
    from_csv = list(csv.DictReader((tmp_path / "epochs.csv").open()))  # strings, empty cells
    assert _is_png(plot_learning_curves(from_csv, tmp_path / "csv.png", metrics=["acc"]))


def test_learning_curves_needs_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_loss"):
        plot_learning_curves([{"epoch": 0, "lr": 0.1}], tmp_path / "x.png")


def test_schedule_with_groups_ramp_freezing_and_swap(tmp_path: Path) -> None:
    steps = []
    for s in range(40):
        steps.append(
            {
                "step": s,
                "lr/stem": 0.01 * 0.5,
                "lr/head": 0.01,
                "batch_size": 32 if s < 20 else 64,
                "trainable_params": 100 if s < 10 else 1000,
                "trainable_groups": 1 if s < 10 else 2,
                "optimizer": "AdamW" if s < 30 else "SGD",
            }
        )
    assert _is_png(plot_schedule(steps, tmp_path / "schedule.png"))
    assert _is_png(plot_schedule([{"step": 0, "lr/group0": 0.1}], tmp_path / "minimal.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_schedule([], tmp_path / "empty.png")


@pytest.mark.parametrize("matrix", [[[3, 1], [0, 4]], np.array([[3, 1], [0, 4]]), torch.tensor([[3, 1], [0, 4]])])
def test_confusion_matrix_inputs(matrix, tmp_path: Path) -> None:
    assert _is_png(plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "cm.png"))


def test_confusion_matrix_many_classes_and_empty_rows(tmp_path: Path) -> None:
    counts = np.zeros((30, 30), dtype=int)
    counts[:20, :20] = np.eye(20, dtype=int) * 5
    names = [f"class_{i}" for i in range(30)]
    assert _is_png(plot_confusion_matrix(counts, names, tmp_path / "big.png", normalize=False))
    assert _is_png(plot_confusion_matrix(counts, None, tmp_path / "big_norm.png"))


def test_confusion_matrix_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]], None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 names"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "x.png")


def test_pyplot_state_untouched(tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    plot_confusion_matrix([[1, 0], [0, 1]], None, tmp_path / "x.png")
    assert matplotlib.get_backend() == backend
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []
