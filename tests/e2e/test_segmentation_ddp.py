"""A segmenter under 2-process DDP on files with masks: the replicas stay identical through the unfreeze.

The decoder and head train alone in epoch 0 (DDP registers only them), the encoder joins in epoch 1 (LayerFreezing
wraps the model again); after every epoch every parameter is gathered from both ranks and compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from freeze_helpers import trainer
from segmentation_fixture import make_segmentation_folder

from lit_transfer import TransferSegmenter
from lit_transfer.data import SegmentationFolderDataModule


class Spread(L.Callback):
    """Per epoch: the largest difference of any parameter between the ranks, and the trainable tensor count."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.epochs: list[dict[str, float]] = [{}]

    def on_train_start(self, trainer, pl_module):
        self.epochs[0]["encoder"] = _encoder(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        spread = float((gathered.max(0).values - gathered.min(0).values).abs().max())
        trainable = sum(p.requires_grad for p in pl_module.parameters())
        self.epochs.append({"spread": spread, "trainable": trainable, "encoder": _encoder(pl_module)})

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            Path(self.out).write_text(json.dumps(self.epochs))


def _encoder(pl_module: L.LightningModule) -> float:
    return float(sum(p.detach().double().abs().sum() for p in pl_module.backbone.encoder.parameters()))


@pytest.mark.slow
@pytest.mark.ddp
def test_replicas_stay_identical_through_the_unfreeze(tmp_path: Path) -> None:
    root = make_segmentation_folder(tmp_path / "data", train=8, val=0, test=0, predict=0)
    data = SegmentationFolderDataModule(
        root, image_size=32, batch_size=2, num_workers=0, val_fraction=0, train_transform="light"
    )
    torch.manual_seed(0)
    model = TransferSegmenter("test_resnet", num_classes=3, pretrained=False, decoder_channels=16, layer_decay=0.8)
    out = str(tmp_path / "spread.json")
    trainer(tmp_path, 3, [Spread(out)], devices=2, strategy="ddp_spawn", enable_checkpointing=False).fit(model, data)
    start, *epochs = json.loads(Path(out).read_text())
    assert [e["spread"] for e in epochs] == [0.0, 0.0, 0.0]
    assert epochs[0]["trainable"] < epochs[1]["trainable"] == epochs[2]["trainable"]  # the encoder joined
    assert epochs[0]["encoder"] == start["encoder"] != epochs[1]["encoder"] != epochs[2]["encoder"]
