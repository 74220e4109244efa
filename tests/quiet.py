"""The one quiet CPU Trainer of the tests, and the one tiny image dataset; conftest.py serves both as fixtures.

Every test helper that builds a Trainer starts from :data:`QUIET` (CPU, one device, deterministic, no logger,
progress bar, model summary, sanity check or checkpoints) and overrides what it is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import TensorDataset

QUIET: dict[str, Any] = dict(
    accelerator="cpu",
    devices=1,
    deterministic=True,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
    enable_checkpointing=False,
)


def quiet_options(root: Path | str, **overrides: Any) -> dict[str, Any]:
    """:data:`QUIET` with ``default_root_dir=root`` and ``overrides`` applied."""
    return {**QUIET, "default_root_dir": str(root), **overrides}


def quiet_trainer(root: Path | str, **overrides: Any) -> pl.Trainer:
    """A quiet CPU Trainer writing under ``root``."""
    return pl.Trainer(**quiet_options(root, **overrides))


def tiny_images(n: int = 32, size: int = 16, classes: int = 3, seed: int = 0, shift: float = 0.0) -> TensorDataset:
    """``n`` random ``3 x size x size`` images with class labels, from a private generator (never the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) + shift
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)
