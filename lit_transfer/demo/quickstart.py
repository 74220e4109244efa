"""Offline quick start: pretrain a backbone on digits 0-4, transfer it to 10-shot digits 5-9, evaluate.

``python -m lit_transfer.demo.quickstart`` (or ``make quickstart``) runs, through the ``lit-transfer`` CLI machinery
(:class:`~lit_transfer.cli.app.TransferCLI` with ``recipes/defaults.yaml`` and ``recipes/quickstart.yaml``):

1. **Source task.** A ``resnet10t`` from random init trained for 30 epochs on every training image of digits
   0-4 (32x32, 3 channels; AdamW 3e-3, label smoothing 0.1, the digit-safe augmentation of
   :data:`~lit_transfer.demo.source_model.DIGIT_AUGMENT`: small shifts, scale, rotation and shear, no flips), tested on
   their held-out images; the backbone is saved as ``backbone.safetensors``. The recipe is
   :mod:`lit_transfer.demo.source_model`'s, which the benchmark suite's transfer table uses too.
2. **Target task.** ``recipes/quickstart.yaml`` on digits 5-9 with 10 labelled images per class, the backbone
   loaded through ``pretrained: <path>.safetensors``: LP-FT (the classifier fitted to 4 augmented views' features,
   then the head only for 5 epochs, then everything) with layer-wise LR decay 0.8, AdamW 3e-3, the same digit-safe
   augmentation, 30 epochs.
3. **Evaluation** of the final weights on the held-out target test images (the same scans for every run), and,
   unless ``--no-baselines``, three baselines on the same 50 images with the same seeds, batch size (16),
   epochs (30) and warmup + cosine schedule, each configured as a user would with the package defaults
   (:data:`BASELINES`; no augmentation, the DigitsDataModule default):

   - *naive full fine-tune*: the source backbone, everything trainable from the start, AdamW 1e-3, no layer decay;
   - *linear probe*: the source backbone frozen, only the new head trains, AdamW 1e-2;
   - *scratch (no transfer)*: random init, everything trainable, AdamW 1e-3.

Everything lands under ``runs/quickstart/`` (``--out``): checkpoints, the resolved ``config.yaml``, TensorBoard
and CSV logs and the plots of each run's ``lightning_logs/version_N``. ``--fast`` shrinks every run to a few
batches (a smoke test, seconds). ``--seeds 0 1 2`` repeats the target runs over few-shot draws and seeds and
adds a table of mean ± std per run over the seeds.

Accuracy figures are not kept here: single-seed results differ between machines (CPU kernels differ) and, with
ten shots per class, between seeds by a few points. Compare settings over seeds (``--seeds 0 1 2`` prints mean ±
std); the benchmark suite's transfer table (``docs/benchmarks/results.md``, generated) holds the measured means.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the quick start never needs the network

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_transfer.demo.source_model import (
    FAST_ARGS,
    QUIET_ARGS,
    RECIPES,
    SOURCE_EPOCHS,
    RunResult,
    fit_and_test,
    save_backbone,
    source_args,
    train_source,
)

TARGET_CLASSES = "[5, 6, 7, 8, 9]"
RECIPE_NAME = "recipe: LP-FT + LLRD + augmentation"


def _recipe_args() -> list[str]:
    return ["--config", str(RECIPES / "defaults.yaml"), "--config", str(RECIPES / "quickstart.yaml")]


def run_cli(name: str, args: Sequence[str], seed: int = 0, quiet: bool = False) -> RunResult:
    """Build the CLI from ``args`` (as ``lit-transfer fit`` would), fit, then test the final weights.

    Args:
        name: Row name for the results table.
        args: Command-line arguments, without the subcommand.
        seed: Recorded in the result (the arguments set the actual seeds).
        quiet: No progress bar, logger or checkpoints (baselines).

    Returns:
        Test metrics and where the run's files are.
    """
    result, cli = fit_and_test(name, [*args, *(QUIET_ARGS if quiet else ())], seed)
    if quiet:
        result.log_dir = None
        return result
    checkpoint = cli.trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint):
        last = os.path.join(checkpoint.dirpath or "", "last.ckpt")  # the CLI's every-epoch checkpoint
        result.checkpoints = {"best": checkpoint.best_model_path, "last": last}
    return result


def pretrain_source(out: Path, epochs: int, fast: bool) -> tuple[RunResult, Path]:
    """Step 1: train resnet10t from scratch on digits 0-4 and save its weights as ``backbone.safetensors``."""
    result, backbone = train_source(source_args(out / "source", epochs, fast=fast))
    weights = save_backbone(backbone, out / "source" / "backbone.safetensors")
    return result, weights


def target_args(out: Path, weights: Path, seed: int, epochs: int, fast: bool) -> list[str]:
    """Arguments of the recipe run on the 10-shot target task (``recipes/quickstart.yaml``)."""
    return [
        *_recipe_args(),
        f"--trainer.default_root_dir={out / 'target'}",
        f"--trainer.max_epochs={epochs}",
        f"--model.pretrained={weights}",
        f"--data.classes={TARGET_CLASSES}",
        f"--data.seed={seed}",
        f"--seed_everything={seed}",
        *(FAST_ARGS if fast else ()),
    ]


_PACKAGE_DEFAULTS = ("--model.layer_decay=null", "--data.train_transform=none")
BASELINES: dict[str, list[str]] = {
    "naive full fine-tune": [
        "--model.freeze=full_fine_tune",
        "--model.optimizer.init_args.lr=0.001",
        *_PACKAGE_DEFAULTS,
    ],
    "linear probe": ["--model.freeze=linear_probe", "--model.optimizer.init_args.lr=0.01", *_PACKAGE_DEFAULTS],
    "scratch (no transfer)": [
        "--model.pretrained=false",
        "--model.freeze=full_fine_tune",
        "--model.optimizer.init_args.lr=0.001",
        *_PACKAGE_DEFAULTS,
    ],
}
"""Overrides of the recipe that give each baseline: same 50 images, epochs, batch size, seeds and warmup + cosine
schedule; the package defaults otherwise (no layer decay, no augmentation)."""


def format_table(rows: Sequence[RunResult]) -> str:
    """A plain-text results table: one line per run, accuracy and macro F1 on the held-out test images."""
    header = f"{'run':<36} {'seed':>4} {'test acc':>9} {'test F1':>8} {'time':>7}"
    lines = ["Results (held-out test images, final weights)", header, "-" * len(header)]
    for row in rows:
        acc = row.metrics.get("test_acc", float("nan"))
        f1 = row.metrics.get("test_f1", float("nan"))
        lines.append(f"{row.name:<36} {row.seed:>4} {acc:>9.2%} {f1:>8.3f} {row.seconds:>6.0f}s")
    return "\n".join(lines)


def format_seed_summary(rows: Sequence[RunResult]) -> str:
    """Mean ± standard deviation of test accuracy and F1 for every run name with results for two or more seeds.

    Example:
        >>> runs = [RunResult("recipe", seed, {"test_acc": a, "test_f1": a}, 1.0) for seed, a in enumerate([0.8, 0.9])]
        >>> print(format_seed_summary(runs).splitlines()[-1])
        recipe                                   2   85.00% ± 7.07%   0.850 ± 0.071
    """
    by_name: dict[str, list[RunResult]] = {}
    for row in rows:
        by_name.setdefault(row.name, []).append(row)
    header = f"{'run':<36} {'seeds':>5} {'test acc':>16} {'test F1':>15}"
    lines = ["Mean ± std over seeds (held-out test images, final weights)", header, "-" * len(header)]
    for name, runs in by_name.items():
        if len({run.seed for run in runs}) < 2:
            continue
        acc = [run.metrics.get("test_acc", math.nan) for run in runs]
        f1 = [run.metrics.get("test_f1", math.nan) for run in runs]
        lines.append(
            f"{name:<36} {len(runs):>5} {statistics.fmean(acc):>7.2%} ± {statistics.stdev(acc):.2%}"
            f" {statistics.fmean(f1):>7.3f} ± {statistics.stdev(f1):.3f}"
        )
    return "\n".join(lines)


def _where(source: RunResult, weights: Path, recipe_runs: Sequence[RunResult]) -> str:
    lines = ["Files", f"  source backbone weights: {weights}", f"  source run (logs, checkpoints): {source.log_dir}"]
    for run in recipe_runs:
        lines.append(f"  target run, seed {run.seed}: {run.log_dir}")
        for kind in ("best", "last"):
            if run.checkpoints.get(kind):
                lines.append(f"    {kind} checkpoint: {run.checkpoints[kind]}")
        lines.append(f"    config: {Path(str(run.log_dir)) / 'config.yaml'}")
        lines.append("    logs: metrics.csv (CSV), events.out.tfevents.* (TensorBoard); plots: *.png")
    lines.append(f"  TensorBoard: tensorboard --logdir {Path(str(recipe_runs[0].log_dir)).parent.parent}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the quick start."""
    parser = argparse.ArgumentParser(prog="python -m lit_transfer.demo.quickstart", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder")
    parser.add_argument("--fast", action="store_true", help="a few batches per run (smoke test)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the target runs")
    parser.add_argument("--source-epochs", type=int, default=SOURCE_EPOCHS)
    parser.add_argument("--target-epochs", type=int, default=30)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: this tiny model gains little from more, and several threads on a busy"
        " machine can run 10x slower)",
    )
    baselines = parser.add_mutually_exclusive_group()
    baselines.add_argument("--baselines", dest="baselines", action="store_true", default=None)
    baselines.add_argument("--no-baselines", dest="baselines", action="store_false", help="only the recipe")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _quiet(threads: int) -> Iterator[None]:
    """Fewer Lightning info lines and warnings, and ``threads`` torch threads; all restored afterwards."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level, old_threads = logger.level, torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        logger.setLevel(logging.WARNING)
        torch.set_num_threads(max(1, threads))
        try:
            yield
        finally:
            logger.setLevel(level)
            torch.set_num_threads(old_threads)


def main(argv: Sequence[str] | None = None) -> list[RunResult]:
    """Run the quick start and print the results table.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        Source run, then recipe and baseline runs.
    """
    options = parse_args(argv)
    with _quiet(options.threads):
        return _run(options)


def _run(options: argparse.Namespace) -> list[RunResult]:
    out: Path = options.out
    out.joinpath("source").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    source_epochs = 1 if options.fast else options.source_epochs
    target_epochs = 2 if options.fast else options.target_epochs
    print(f"[1/3] Source task: resnet10t from scratch on digits 0-4 ({source_epochs} epochs)", flush=True)
    source, weights = pretrain_source(out, source_epochs, options.fast)
    rows: list[RunResult] = [source]
    recipe_runs: list[RunResult] = []
    with_baselines = (not options.fast) if options.baselines is None else options.baselines
    for seed in options.seeds:
        print(f"[2/3] Target task: recipes/quickstart.yaml on 10-shot digits 5-9 (seed {seed})", flush=True)
        args = target_args(out, weights, seed, target_epochs, options.fast)
        recipe_runs.append(run_cli(RECIPE_NAME, args, seed))
        rows.append(recipe_runs[-1])
        if with_baselines:
            for name, overrides in BASELINES.items():
                print(f"[3/3] Baseline: {name} (seed {seed})", flush=True)
                rows.append(run_cli(name, [*args, *overrides], seed, quiet=True))
    print()
    print(format_table(rows))
    if len(set(options.seeds)) > 1:
        print()
        print(format_seed_summary(rows))
    print()
    print(_where(source, weights, recipe_runs))
    print(f"\nQuick start finished in {time.perf_counter() - started:.0f} s.")
    return rows


if __name__ == "__main__":
    main()
