"""The DataModules under a real Trainer: batch-size changes, exact resume of batches, DDP samplers (C1, C2, B4)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from quiet import quiet_trainer
from torch import nn

from lit_transfer.data import BalancedSampler, DigitsDataModule, EpochSampler


class _Tiny(LightningModule):
    def __init__(self, num_classes: int, size: int = 12) -> None:
        super().__init__()
        self.net = nn.Linear(3 * size * size, num_classes)
        self.seen: list[tuple[int, int, str]] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        digest = hashlib.sha1(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:12]
        self.seen.append((self.current_epoch, images.shape[0], digest))
        return nn.functional.cross_entropy(self.net(images.flatten(1)), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(images.flatten(1)), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Ramp(Callback):
    """Doubles the batch size at each epoch end (as BatchSizeRamp does)."""

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.datamodule.batch_size *= 2


def _digits(**kwargs: object) -> DigitsDataModule:
    defaults = {"classes": [0, 1, 2], "shots_per_class": 8, "image_size": 12, "batch_size": 4}
    return DigitsDataModule(**{**defaults, "train_transform": "medium", **kwargs})  # type: ignore[arg-type]


def _trainer(tmp_path: Path, epochs: int, **kwargs: object) -> Trainer:
    return quiet_trainer(tmp_path, max_epochs=epochs, reload_dataloaders_every_n_epochs=1, **kwargs)


def test_ramped_batch_size_applies_and_survives_resume(tmp_path: Path) -> None:
    seed_everything(0)
    model, dm = _Tiny(3), _digits()
    trainer = _trainer(tmp_path / "full", 3, callbacks=[_Ramp()], enable_checkpointing=False)
    trainer.fit(model, dm)
    first_batch = {epoch: size for epoch, size, _ in reversed(model.seen)}
    assert first_batch == {0: 4, 1: 8, 2: 16}
    assert isinstance(trainer.train_dataloader.sampler, EpochSampler)

    seed_everything(0)
    short_model, short_dm = _Tiny(3), _digits()
    short = _trainer(tmp_path / "short", 2, callbacks=[_Ramp()])
    short.fit(short_model, short_dm)
    ckpt = tmp_path / "epoch2.ckpt"
    short.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["DigitsDataModule"] == {"batch_size": 16}

    seed_everything(1)  # a different global RNG state, as after a crash and restart
    resumed_model, resumed_dm = _Tiny(3), _digits()
    resumed = _trainer(tmp_path / "resumed", 3, callbacks=[_Ramp()])
    resumed.fit(resumed_model, resumed_dm, ckpt_path=ckpt)
    assert resumed.global_step > short.global_step
    # same batch sizes, same images (order and augmentations) in the resumed epoch
    assert resumed_model.seen == [s for s in model.seen if s[0] == 2]
    assert short_model.seen == [s for s in model.seen if s[0] < 2]


def test_no_validation_split_runs(tmp_path: Path) -> None:
    model, dm = _Tiny(3), _digits(val_fraction=0)
    trainer = _trainer(tmp_path, 1, enable_checkpointing=False)
    trainer.fit(model, dm)
    assert dm.val_dataset is None and trainer.global_step == 6


class _RecordIndices(Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.per_epoch: list[list[int]] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        assert isinstance(sampler, EpochSampler) and sampler.num_replicas == 2
        assert sampler.rank == trainer.global_rank
        self.per_epoch.append(list(sampler))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        kind = type(trainer.train_dataloader.sampler).__name__
        Path(f"{self.out}.{trainer.global_rank}").write_text(json.dumps({"kind": kind, "epochs": self.per_epoch}))


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.timeout(300)
@pytest.mark.parametrize("balanced", [False, True])
def test_ddp_keeps_our_samplers(tmp_path: Path, balanced: bool) -> None:
    dm = _digits(balanced_sampling=balanced, classes=[0, 1], shots_per_class=None, val_fraction=0)
    trainer = _trainer(
        tmp_path,
        2,
        strategy="ddp_spawn",
        devices=2,
        callbacks=[_RecordIndices(str(tmp_path / "idx"))],
        enable_checkpointing=False,
        limit_train_batches=2,
    )
    trainer.fit(_Tiny(2), dm)
    ranks = [json.loads(Path(f"{tmp_path}/idx.{r}").read_text()) for r in range(2)]
    assert {r["kind"] for r in ranks} == {"BalancedSampler" if balanced else "EpochSampler"}
    dm.setup("fit")
    n = len(dm.train_dataset)
    for epoch in range(2):
        shards = [r["epochs"][epoch] for r in ranks]
        assert len(shards[0]) == len(shards[1])
        if balanced:
            reference = BalancedSampler(dm.train_dataset, dm.train_dataset.labels, seed=dm.seed, num_replicas=2)
            reference.set_epoch(epoch)
            assert [shards[p % 2][p // 2] for p in range(2 * len(shards[0]))] == reference.epoch_draws()
        else:
            assert set(shards[0]) | set(shards[1]) == set(range(n))
            assert len(set(shards[0]) & set(shards[1])) <= 1  # padding only
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]
