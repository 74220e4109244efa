"""Shared pieces of the CLI and recipe tests: the recipes folder and the arguments of a tiny, quiet run."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
"""The ``lit-transfer`` console script of the environment the tests run in."""

TINY = [
    "--model.backbone=test_resnet",
    "--model.pretrained=false",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
]
"""A random-init ``test_resnet`` for two training batches and one validation batch, without progress output."""


def photo_args(image_size: int, batch_size: int, root: str = "photos") -> list[str]:
    """A quiet run of ``defaults.yaml`` with a random ``test_resnet`` on class folders of photos under ``root``."""
    return [
        *("--config", str(RECIPES / "defaults.yaml")),
        *("--data", "ImageFolderDataModule", "--data.root", root),
        *("--model.backbone", "test_resnet"),
        *("--data.image_size", str(image_size), "--data.batch_size", str(batch_size), "--data.num_workers", "0"),
        *("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"),
    ]
