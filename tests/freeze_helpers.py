"""Shared pieces of the freezing tests: fixed data, a recorder callback, a plain (non-timm) LightningModule."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from quiet import quiet_trainer, tiny_images
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

fixed_data = tiny_images


def loader(dataset: TensorDataset, batch_size: int = 8) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def trainer(tmp_path: Path, max_epochs: int, callbacks: list[Callback] | None = None, **kwargs) -> L.Trainer:
    """The quiet Trainer (checkpointing left on: the freezing tests resume from checkpoints)."""
    options = {"enable_checkpointing": True, **kwargs}
    return quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks or [], **options)


class Recorder(Callback):
    """Records, at batch 0 of each epoch, the trainable parameter names, module modes and group LRs."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx != 0:
            return
        optimizer = trainer.optimizers[0]
        self.epochs[trainer.current_epoch] = {
            "trainable": tuple(n for n, p in pl_module.named_parameters() if p.requires_grad),
            "training": tuple(n for n, m in pl_module.named_modules() if m.training),
            "lrs": [(g.get("name"), round(g["lr"], 12), len(g["params"])) for g in optimizer.param_groups],
        }


class PlainModule(L.LightningModule):
    """Not a TransferClassifier: a torch backbone without `group_matcher` and a separate head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.backbone(x).flatten(1))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)


class GatherParams(Callback):
    """At the end of training, all-gathers every parameter and writes the max cross-rank difference to a file."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        if trainer.is_global_zero:
            diff = (gathered[0] - gathered[1]).abs()
            names, sizes = zip(*[(n, p.numel()) for n, p in pl_module.named_parameters()])
            per_param = dict(zip(names, (d.max().item() for d in torch.split(diff, sizes))))
            Path(self.out).write_text(json.dumps({"max": diff.max().item(), "per_param": per_param}))
