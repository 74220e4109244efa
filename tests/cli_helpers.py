"""Shared pieces of the CLI and recipe tests: the recipes folder and the arguments of a tiny, quiet run."""

from __future__ import annotations

from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

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
