"""Every phase-changing feature in one 2-process DDP run: an unfreeze, LR scaling, a batch ramp, an optimizer swap.

The same run on one process with the same global batch ends with the same weights (within float tolerance), and
the replicas are identical after every epoch. ConvNeXt uses LayerNorm, so per-rank batch statistics do not enter.
"""

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from callback_helpers import assert_same_updates
from freeze_helpers import fixed_data, trainer
from torch.utils.data import DataLoader, DistributedSampler

from lit_transfer import FreezeUnfreeze, TransferClassifier
from lit_transfer.callbacks import BatchSizeRamp, LRScaling, OptimizerSwap


class SequentialData(L.LightningDataModule):
    """Fixed data, unshuffled: global batch k holds the same samples on 1 process and on 2 (interleaved) ranks."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.dataset = fixed_data(n=48, size=32, classes=3, seed=3)

    def train_dataloader(self) -> DataLoader:
        # Lightning's own DistributedSampler always shuffles training data; this one keeps the order.
        world = self.trainer.world_size
        sampler = (
            DistributedSampler(self.dataset, world, self.trainer.global_rank, shuffle=False) if world > 1 else None
        )
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, shuffle=False)

    def state_dict(self) -> dict:
        return {"batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batch_size = state_dict["batch_size"]


class Trace(L.Callback):
    """Per epoch: cross-rank max difference of all parameters, optimizer class, batch size; final weights."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.epochs: list[dict] = []
        self.batch = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.batch = len(batch[0])

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        spread = float((gathered.max(0).values - gathered.min(0).values).abs().max()) if gathered.ndim == 2 else 0.0
        self.epochs.append(
            {
                "spread": spread,
                "optimizer": type(trainer.optimizers[0]).__name__,
                "batch": self.batch,
                "trainable": sum(p.requires_grad for p in pl_module.parameters()),
                "head_lr": next(g["lr"] for g in trainer.optimizers[0].param_groups if g["name"] == "head"),
            }
        )

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, self.out + ".pt")
            Path(self.out).write_text(json.dumps(self.epochs))


def _model() -> TransferClassifier:
    torch.manual_seed(0)
    return TransferClassifier(
        "test_convnext",
        num_classes=3,
        pretrained=False,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=1),
        layer_decay=0.8,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7),
    )


def _run(tmp_path: Path, devices: int) -> tuple[list[dict], dict]:
    model = _model()
    out = str(tmp_path / f"trace{devices}.json")
    callbacks = [
        LRScaling(rule="sqrt", base_batch_size=4, warmup_steps=2),
        BatchSizeRamp(milestones={1: 2.0}),
        OptimizerSwap("torch.optim.SGD", optimizer_kwargs={"momentum": 0.9}, at_epoch=2, lr="keep"),
        Trace(out),
    ]
    t = trainer(
        tmp_path / str(devices),
        3,
        callbacks,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
    )
    t.fit(model, datamodule=SequentialData(batch_size=8 // devices))
    return json.loads(Path(out).read_text()), torch.load(out + ".pt", weights_only=True)


@pytest.mark.ddp
def test_all_features_under_ddp_match_one_process(tmp_path):
    single, single_weights = _run(tmp_path, devices=1)
    double, double_weights = _run(tmp_path, devices=2)
    assert [e["optimizer"] for e in double] == ["Adam", "Adam", "SGD"] == [e["optimizer"] for e in single]
    assert [e["batch"] for e in double] == [4, 8, 8]  # per device: 4 -> 8 from epoch 1 (global 8 -> 16)
    assert [e["batch"] for e in single] == [8, 16, 16]
    assert double[0]["trainable"] < double[1]["trainable"] == double[2]["trainable"]
    assert all(e["spread"] == 0.0 for e in double), [e["spread"] for e in double]
    for e1, e2 in zip(single, double):
        assert e1["head_lr"] == pytest.approx(e2["head_lr"], rel=1e-6)
    assert_same_updates(_model().state_dict(), single_weights, double_weights)
