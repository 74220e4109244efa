"""Small in-memory datasets for the multi-label, binary and regression models, built from scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from quiet import quiet_trainer
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

LABELS = ["big", "even", "round"]
TARGETS = ["digit", "ink"]


def digit_images(n: int, offset: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` digits as 3-channel 16x16 float images (values ~[0, 1]) and their digit values."""
    digits = load_digits()
    images = torch.tensor(digits.images[offset : offset + n], dtype=torch.float32) / 16.0
    images = torch.nn.functional.interpolate(images[:, None], size=16, mode="nearest").repeat(1, 3, 1, 1)
    return images, digits.target[offset : offset + n]


def multilabel_targets(digits: np.ndarray) -> torch.Tensor:
    """Multi-hot ``(N, 3)`` labels of each digit: ``big`` (>= 5), ``even``, ``round`` (0, 6, 8, 9)."""
    columns = [digits >= 5, digits % 2 == 0, np.isin(digits, [0, 6, 8, 9])]
    return torch.tensor(np.stack(columns, axis=1), dtype=torch.float32)


def regression_targets(images: torch.Tensor, digits: np.ndarray) -> torch.Tensor:
    """``(N, 2)`` targets in original units: the digit's value and its ink (mean brightness x 100)."""
    return torch.stack([torch.tensor(digits, dtype=torch.float32), images.mean(dim=(1, 2, 3)) * 100], dim=1)


class TaskData(L.LightningDataModule):
    """Digits for one task, unshuffled (a training shard per rank under DDP), with the attributes of the contract."""

    def __init__(self, task: str, n: int = 64, batch_size: int = 16, standardize: bool = True) -> None:
        super().__init__()
        self.task, self.batch_size = task, batch_size
        images, digits = digit_images(n)
        val_images, val_digits = digit_images(n // 2, offset=n)
        if task == "multilabel":
            y, val_y = multilabel_targets(digits), multilabel_targets(val_digits)
            self.num_classes, self.class_names = len(LABELS), list(LABELS)
            self.label_frequencies = y.mean(dim=0).tolist()
        elif task == "binary":
            self.task = "multiclass"  # a binary classifier trains on 2-class multiclass data
            y, val_y = torch.tensor(digits % 2 == 0).long(), torch.tensor(val_digits % 2 == 0).long()
            self.num_classes, self.class_names = 2, ["odd", "even"]
        else:
            y, val_y = regression_targets(images, digits), regression_targets(val_images, val_digits)
            self.num_outputs, self.target_names = len(TARGETS), list(TARGETS)
            self.target_stats = None
            if standardize:
                mean, std = y.mean(dim=0), y.std(dim=0)
                self.target_stats = {"mean": mean.tolist(), "std": std.tolist()}
                y, val_y = (y - mean) / std, (val_y - mean) / std
        self.train_set, self.val_set = TensorDataset(images, y), TensorDataset(val_images, val_y)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)


class EpochLosses(Callback):
    """The epoch-mean training loss of every epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(float(trainer.callback_metrics["train_loss_epoch"]))


def fit_trainer(tmp_path: Path, epochs: int, callbacks: list[Callback] | None = None, **kwargs) -> L.Trainer:
    return quiet_trainer(tmp_path, max_epochs=epochs, callbacks=callbacks or [], **kwargs)
