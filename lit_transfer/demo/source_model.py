"""The digits source model: ``resnet10t`` from random init on every training scan of digits 0-4.

One recipe, shared by the quick start (:mod:`lit_transfer.demo.quickstart`, step 1) and the benchmark suite's transfer
table (``benchmarks/common.py``): AdamW 3e-3 with warmup + cosine, label smoothing 0.1, the digit-safe augmentation
of :data:`DIGIT_AUGMENT`, batch 32, everything trainable, :data:`SOURCE_EPOCHS` epochs, seed :data:`SOURCE_SEED`.
It runs through the ``lit-transfer`` CLI machinery (:class:`~lit_transfer.cli.app.TransferCLI` with
``recipes/defaults.yaml``), so the arguments below are the command line a user would type after ``lit-transfer fit``.

Example:
    >>> args = source_args(Path("runs/source"), epochs=2)
    >>> "--data.classes=[0, 1, 2, 3, 4]" in args, "--trainer.max_epochs=2" in args
    (True, True)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from lit_transfer.cli import TransferCLI
from lit_transfer.cli.recipes import recipes_dir

__all__ = [
    "DIGIT_AUGMENT",
    "FAST_ARGS",
    "QUIET_ARGS",
    "RECIPES",
    "SOURCE_CLASSES",
    "SOURCE_EPOCHS",
    "SOURCE_SEED",
    "RunResult",
    "fit_and_test",
    "save_backbone",
    "source_args",
    "train_source",
]

RECIPES = recipes_dir()
"""The shipped recipes (``lit_transfer/recipes``: ``defaults.yaml`` and the overlays), in a clone or an install."""
SOURCE_CLASSES = "[0, 1, 2, 3, 4]"
"""The source task's digits, as a ``--data.classes`` value."""
SOURCE_EPOCHS = 30
SOURCE_SEED = 42
"""Seed of the source run: ``seed_everything`` of ``recipes/defaults.yaml`` and the DigitsDataModule default."""
QUIET_ARGS = (
    "--trainer.logger=false",
    "--trainer.enable_checkpointing=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)
"""No logger, checkpoints, progress bar or model summary (the quick start's baselines, the benchmarks' source run)."""
DIGIT_AUGMENT = (
    '[{"class_path": "albumentations.Affine", "init_args": {"scale": [0.9, 1.1], "translate_percent": [-0.08, 0.08],'
    ' "rotate": [-10, 10], "shear": [-5, 5], "p": 0.8}}]'
)
"""Digit-safe training augmentation (no flips) of the source run; ``recipes/quickstart.yaml`` uses the same."""
FAST_ARGS = ("--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=2")
"""A few batches per run: a smoke test in seconds."""


@dataclass
class RunResult:
    """Outcome of one fit + test run.

    Attributes:
        name: Row name for a results table.
        seed: The run's seed (recorded; the arguments set the actual seeds).
        metrics: The test metrics (``test_acc``, ``test_f1``, ``test_loss``, ...) of the final weights.
        seconds: Wall time of fit + test.
        log_dir: The run's log folder (``None`` without a logger).
        checkpoints: ``{"best": path, "last": path}`` when the run wrote checkpoints.
    """

    name: str
    seed: int
    metrics: dict[str, float]
    seconds: float
    log_dir: str | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)


def fit_and_test(name: str, args: Sequence[str], seed: int = 0) -> tuple[RunResult, TransferCLI]:
    """Build the CLI from ``args`` (as ``lit-transfer fit`` would, without the subcommand), fit, test the final weights.

    Args:
        name: Row name of the result.
        args: Command-line arguments.
        seed: Recorded in the result.

    Returns:
        The result (test metrics, time, log folder) and the :class:`~lit_transfer.cli.app.TransferCLI`, whose ``model``,
        ``datamodule`` and ``trainer`` are the trained ones.
    """
    start = time.perf_counter()
    with warnings.catch_warnings():  # the demo's own options are in sys.argv; `args` is the whole command line
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = TransferCLI(args=list(args), run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    result = RunResult(name, seed, {k: float(v) for k, v in metrics.items()}, time.perf_counter() - start)
    result.log_dir = cli.trainer.log_dir
    return result, cli


def source_args(
    root_dir: Path,
    epochs: int = SOURCE_EPOCHS,
    *,
    seed: int = SOURCE_SEED,
    image_size: int = 32,
    fast: bool = False,
) -> list[str]:
    """CLI arguments of the source run: ``resnet10t`` from random init on every training image of digits 0-4.

    Args:
        root_dir: The run's ``default_root_dir``.
        epochs: Training epochs.
        seed: Seed of the initialisation, the training order and the augmentation.
        image_size: Input size (the 8x8 scans upsampled).
        fast: Add :data:`FAST_ARGS` (a few batches).

    Returns:
        The arguments after ``lit-transfer fit``.
    """
    return [
        "--config",
        str(RECIPES / "defaults.yaml"),
        f"--trainer.default_root_dir={root_dir}",
        f"--trainer.max_epochs={epochs}",
        f"--seed_everything={seed}",
        f"--data.seed={seed}",
        f"--data.image_size={image_size}",
        f"--data.classes={SOURCE_CLASSES}",
        "--model.backbone=resnet10t",
        "--model.pretrained=false",
        "--model.freeze=full_fine_tune",
        "--model.optimizer.init_args.lr=0.003",
        "--model.label_smoothing=0.1",
        f"--data.train_transform={DIGIT_AUGMENT}",
        *(FAST_ARGS if fast else ()),
    ]


def train_source(args: Sequence[str]) -> tuple[RunResult, torch.nn.Module]:
    """Fit and test the source run of :func:`source_args` (plus any overrides); return it and the trained backbone."""
    result, cli = fit_and_test("source: scratch on digits 0-4", args)
    return result, cast(torch.nn.Module, cli.model.backbone)


def save_backbone(backbone: torch.nn.Module, path: Path, head: bool = True) -> Path:
    """Save ``backbone``'s weights as safetensors; ``head=False`` leaves out its classifier (a fresh head on load).

    Args:
        backbone: A timm model (its ``pretrained_cfg["classifier"]`` names the head; ``fc`` otherwise).
        path: The ``.safetensors`` file (its folder is created).
        head: Keep the classifier's weights.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    state = backbone.state_dict()
    if not head:
        classifier = getattr(backbone, "pretrained_cfg", {}).get("classifier") or "fc"
        state = {k: v for k, v in state.items() if not k.startswith(f"{classifier}.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))
    return path
