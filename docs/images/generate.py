"""Regenerate the example plots of the docs: a short, offline transfer run on the digits.

    .venv/bin/python docs/images/generate.py

A small resnet10t is first trained from scratch on digits 0-4 (the "pretrained" source model, as no hub weights
are available offline), then its weights are transferred to digits 5-9 with ``freeze_unfreeze`` (head only in
epoch 0, then everything) and a warmup + cosine schedule; RunReport's PNGs of the target run are copied here.
A few minutes on 2 CPU cores, no download.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_transfer import TransferClassifier
from lit_transfer.callbacks import RunReport
from lit_transfer.data import DigitsDataModule

HERE = Path(__file__).parent


def _trainer(tmp: str, epochs: int, callbacks: list) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )


def main() -> None:
    """Train the source model, transfer it, and copy the target run's plots here."""
    torch.set_num_threads(2)
    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        source_data = DigitsDataModule(classes=[0, 1, 2, 3, 4], image_size=32, batch_size=32)
        source = TransferClassifier("resnet10t", num_classes=5, pretrained=False, freeze="full_fine_tune")
        trainer = _trainer(tmp, 4, [])
        trainer.fit(source, source_data)
        weights = Path(tmp) / "source.ckpt"
        trainer.save_checkpoint(weights)

        data = DigitsDataModule(classes=[5, 6, 7, 8, 9], image_size=32, batch_size=32)
        model = TransferClassifier(
            "resnet10t",
            num_classes=data.num_classes,
            class_names=data.class_names,
            pretrained=str(weights),
            freeze="freeze_unfreeze",
            warmup_epochs=1,
        )
        report = RunReport(output_dir=Path(tmp) / "report")
        checkpoint = ModelCheckpoint(dirpath=Path(tmp) / "ckpt", monitor="val_acc", mode="max")
        trainer = _trainer(tmp, 5, [report, checkpoint])
        trainer.fit(model, data)
        trainer.test(model, data)
        for name in ("learning_curves.png", "schedule.png", "confusion_matrix.png"):
            shutil.copy(Path(tmp) / "report" / name, HERE / name)
            print(name, (HERE / name).stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
