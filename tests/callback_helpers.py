"""A plain LightningModule and fixed data for callback tests (not the package's classifier).

Data is built once from a private ``torch.Generator`` and read in order, so an uninterrupted run
and a resumed one see the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from quiet import quiet_options
from torch import nn
from torch.optim import lr_scheduler as sched
from torch.utils.data import DataLoader, TensorDataset

SCHEDULERS = ("none", "step", "exp", "lambda", "onecycle", "cosine", "sequential", "plateau")


def make_dataset(n: int = 32, dim: int = 4, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    w = torch.randn(dim, 1, generator=gen)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


class FixedDataModule(pl.LightningDataModule):
    def __init__(self, batch_size: int = 4, n: int = 32, dim: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.dataset = make_dataset(n, dim, seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False)


class RankDataModule(FixedDataModule):
    """Each rank reads a different half of the data (no sampler injection needed)."""

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        subset = torch.utils.data.Subset(self.dataset, list(range(rank, len(self.dataset), world)))
        return DataLoader(subset, batch_size=self.batch_size, shuffle=False)


def _decay(step: int) -> float:
    return 0.95**step


class TinyRegressor(pl.LightningModule):
    """Two named param groups with different LRs (``body`` at ``lr``, ``head`` at ``lr * head_scale``)."""

    def __init__(
        self,
        optimizer: str = "sgd",
        lr: float = 0.05,
        scheduler: str = "none",
        interval: str = "step",
        head_scale: float = 0.5,
        dim: int = 4,
        total_steps: int | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        super().__init__()
        with torch.random.fork_rng():  # the same initial weights in every run
            torch.manual_seed(0)
            self.body = nn.Linear(dim, 8)
            self.head = nn.Linear(8, 1)
        self.optimizer_name, self.lr, self.scheduler_name = optimizer, lr, scheduler
        self.interval, self.head_scale, self.total_steps = interval, head_scale, total_steps
        self.betas = betas
        self.used_lrs: list[list[float]] = []
        self.first_batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if batch_idx == 0:
            self.first_batch_sizes.append(int(x.shape[0]))
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.used_lrs.append([float(g["lr"]) for g in optimizer.param_groups])

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"name": "body", "params": list(self.body.parameters()), "lr": self.lr, "lr_scale": 1.0},
            {
                "name": "head",
                "params": list(self.head.parameters()),
                "lr": self.lr * self.head_scale,
                "lr_scale": self.head_scale,
            },
        ]

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=0.9)
        else:
            opt = torch.optim.Adam(groups, lr=self.lr, betas=self.betas)
        scheduler = self._scheduler(opt)
        if scheduler is None:
            return opt
        config = {"scheduler": scheduler, "interval": self.interval}
        if self.scheduler_name == "plateau":
            config["monitor"] = "train_loss_step"
        return {"optimizer": opt, "lr_scheduler": config}

    def _scheduler(self, opt: torch.optim.Optimizer) -> Any:
        name = self.scheduler_name
        total = self.total_steps or int(self.trainer.estimated_stepping_batches)
        if name == "none":
            return None
        if name == "step":
            return sched.StepLR(opt, step_size=3, gamma=0.5)
        if name == "exp":
            return sched.ExponentialLR(opt, gamma=0.9)
        if name == "lambda":
            return sched.LambdaLR(opt, _decay)
        if name == "onecycle":
            return sched.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total)
        if name == "cosine":
            return sched.CosineAnnealingLR(opt, T_max=total)
        if name == "sequential":
            warm = sched.LinearLR(opt, start_factor=0.1, total_iters=3)
            return sched.SequentialLR(opt, [warm, sched.CosineAnnealingLR(opt, T_max=20)], milestones=[3])
        if name == "plateau":
            return sched.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        raise ValueError(name)


def trainer_kwargs(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return quiet_options(tmp_path, **overrides)


def every_epoch_checkpoint(dirpath: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=dirpath, filename="{epoch}", every_n_epochs=1, save_top_k=-1)


def fit(
    tmp_path: Path,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    callbacks: list[pl.Callback] | None = None,
    ckpt_path: str | Path | None = None,
    **overrides: Any,
) -> pl.Trainer:
    callbacks = list(callbacks or [])
    if any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
        overrides.setdefault("enable_checkpointing", True)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def params_equal(a: nn.Module, b: nn.Module, atol: float = 0.0) -> bool:
    return all(
        torch.allclose(pa, pb, atol=atol, rtol=0)
        for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters())
    )


def assert_same_updates(
    start: dict[str, torch.Tensor], single: dict[str, torch.Tensor], double: dict[str, torch.Tensor], rel: float = 1e-3
) -> None:
    """Assert that two runs from ``start`` moved every tensor alike: ``|single - double| <= rel * |single - start|``.

    One process and two DDP ranks sum the same gradients in another order; Adam divides by the square root of tiny
    second moments, so those last-bit differences grow to about 1e-5 over two epochs (more on some CPUs). Measured
    against how far each tensor moved, they stay far below ``rel``, while a wrong learning rate, a skipped gradient
    average or a phase change on one side moves a tensor by a different amount altogether.
    """
    assert single.keys() == double.keys()
    for name, value in single.items():
        other = double[name]
        if not value.is_floating_point():
            assert torch.equal(value, other), name
            continue
        moved = float((value - start[name]).norm())
        gap = float((value - other).norm())
        assert gap <= rel * moved + 1e-8, f"{name}: the runs differ by {gap:.3g}, the tensor moved {moved:.3g}"


class StopAfter(pl.Callback):
    """Stop a fit after ``epochs`` epochs, keeping ``max_epochs`` (and every horizon derived from it) unchanged."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
