"""Shared helpers of the benchmarks: machine header, timing, markdown tables, plots, Trainers, source weights."""

from __future__ import annotations

import gc
import json
import logging
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

CACHE_DIR = Path("runs") / "benchmarks"  # runs/ is git-ignored
BACKBONE = "resnet10t"
SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)


# ------------------------------------------------------------------------------------------------ environment
def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, core count and library versions for the header of every table."""
    import albumentations
    import lightning
    import timm

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def header_markdown(info: dict[str, Any]) -> str:
    """One line naming the machine and the versions."""
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores (shared); Python {info['python']}, torch {info['torch']},"
        f" lightning {info['lightning']}, timm {info['timm']}, albumentations {info['albumentations']};"
        f" run {info['date']}."
    )


def machine_cell(info: dict[str, Any] | None) -> str:
    """The machine and date of one benchmark's run, for its row of the time table.

    Example:
        >>> machine_cell({"cpu": "AMD EPYC", "cores": 2, "date": "2026-12-06 13:13 UTC"})
        'AMD EPYC, 2 cores, 2026-12-06 13:13 UTC'
        >>> machine_cell(None)
        'not recorded'
    """
    if not info:
        return "not recorded"
    return f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, {info.get('date', '?')}"


def set_threads(n: int = 1) -> None:
    """Pin torch (and OpenCV) to ``n`` threads: timings stay comparable on a shared machine."""
    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass


def quiet() -> None:
    """Silence Lightning's info messages and the warnings benchmarks trigger on purpose (few batches, no workers)."""
    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO; override after it)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lit_transfer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")


def make_trainer(**kwargs: Any) -> Any:
    """A CPU Trainer without progress bar, logger, checkpoints, model summary or sanity check (overridable)."""
    import lightning as L

    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": False,
    }
    settings.update(kwargs)
    return L.Trainer(**settings)


def test_accuracy(trainer: Any, model: Any, datamodule: Any) -> float:
    """Top-1 accuracy of ``model`` on the DataModule's test split (in %)."""
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    return 100.0 * float(results[0]["test_acc"])


# ------------------------------------------------------------------------------------------------------ stats
def median(values: Sequence[float]) -> float:
    """Median of ``values``."""
    return float(statistics.median(values))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def fmt_pm(values: Sequence[float], digits: int = 1) -> str:
    """``mean ± std`` of ``values`` (just the value for a single one)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def verdict(ok: bool) -> str:
    """``PASS`` or ``MISS``."""
    return "PASS" if ok else "MISS"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of ``fn`` and its result, the call started after a garbage collection.

    A fit leaves its Trainer and model in reference cycles that only Python's cyclic collector frees; a full
    collection over that garbage can take a good part of a second and lands in whichever call happens to be running,
    which skews a short timed call (a range test) against a long one.
    """
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(candidates: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each candidate once per round, ``repeats`` rounds, rotating the order; collect the returned times."""
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(float(candidates[name]()))
    return samples


def jsonable(value: Any) -> Any:
    """``value`` as ``results.json`` stores it: dict keys as strings, tuples as lists, other objects as strings.

    Example:
        >>> jsonable({0.001: (1, None), "a": {2: Path("x")}})
        {'0.001': [1, None], 'a': {'2': 'x'}}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------------------------------- markdown
def generated_notice(name: str) -> str:
    """The first line of a file that ``python -m benchmarks.run --only <name>`` writes for the docs to include."""
    return f"<!-- Generated by `python -m benchmarks.run --only {name}`; do not edit by hand. -->\n\n"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 2) -> str:
    """A float with ``digits`` decimals; ``n/a`` for NaN."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------------ plots
def new_figure(width: float = 6.0, height: float = 3.6) -> tuple[Any, Any]:
    """A matplotlib figure and axes on the Agg backend (pyplot's global state is not used)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    return figure, figure.subplots()


def save_figure(figure: Any, out_dir: str | Path, name: str) -> str:
    """Save ``figure`` as ``out_dir/name`` (PNG) and return the file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out / name)
    return name


# ------------------------------------------------------------------------------------------------ source task
def source_weights(
    image_size: int = 32,
    epochs: int | None = None,
    seed: int | None = None,
    classes: Sequence[int] = SOURCE_CLASSES,
    backbone: str = BACKBONE,
) -> tuple[Path, dict[str, Any]]:
    """The quick start's source model: ``resnet10t`` trained on digits 0-4, saved as safetensors without its head.

    The run is :func:`lit_transfer.demo.source_model.source_args` (random init, all training scans, AdamW 3e-3, label
    smoothing 0.1, digit-safe augmentation; 30 epochs and seed 42 unless given) on the CPU without logger or
    checkpoints. The file holds the backbone without its classifier, so a target model loads it with a fresh head.
    It is trained once and cached under ``runs/benchmarks/``, keyed by its settings, with a JSON of how it was made.

    Args:
        image_size: Input size of the source task (and of the target task that reuses it).
        epochs: Training epochs on the source task (default: the quick start's).
        seed: Seed of the initialisation, the training order and the augmentation (default: the quick start's).
        classes: The source task's digits (default: the quick start's 0-4; e.g. all ten for an input-level shift);
            any other set is passed as a ``--data.classes`` override after the recipe.
        backbone: The timm architecture trained by the recipe (default: the quick start's :data:`BACKBONE`); any
            other is passed as a ``--model.backbone`` override after the recipe and named in the file name.

    Returns:
        The weights file and its metadata (recipe arguments, source test accuracy, training time).
    """
    import hashlib
    import tempfile

    from lit_transfer.demo import source_model

    epochs = source_model.SOURCE_EPOCHS if epochs is None else epochs
    seed = source_model.SOURCE_SEED if seed is None else seed
    classes = [int(c) for c in classes]
    override = [] if tuple(classes) == SOURCE_CLASSES else [f"--data.classes={classes}"]
    override += [] if backbone == BACKBONE else [f"--model.backbone={backbone}"]
    recipe = source_model.source_args(Path("<run dir>"), epochs, seed=seed, image_size=image_size) + override
    recipe = [arg.replace(str(source_model.RECIPES), "recipes") for arg in recipe]
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:8]
    path = CACHE_DIR / f"source_{backbone}_{image_size}px_{epochs}ep_seed{seed}_{digest}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        return path, json.loads(meta_path.read_text())
    with tempfile.TemporaryDirectory() as run_dir:
        args = source_model.source_args(Path(run_dir), epochs, seed=seed, image_size=image_size) + override
        args += ["--trainer.accelerator=cpu", *source_model.QUIET_ARGS]
        result, network = source_model.train_source(args)
    source_model.save_backbone(network, path, head=False)
    meta = {
        "backbone": backbone,
        "classes": classes,
        "image_size": image_size,
        "epochs": epochs,
        "seed": seed,
        "recipe": "lit_transfer.demo.source_model.source_args",
        "args": recipe,
        "source_test_acc": 100.0 * result.metrics["test_acc"],
        "train_seconds": result.seconds,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return path, meta


# ------------------------------------------------------------------------------------------------ callbacks
def step_timer() -> Any:
    """A callback recording ``perf_counter`` at every ``on_train_batch_start`` and ``on_train_epoch_start/end``.

    Consecutive batch starts bound one whole training step (data fetch, forward, backward, optimizer, every hook
    and ``self.log``), the region the plain loop times between two iterations.
    """
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.batch_starts: list[float] = []
            self.epoch_bounds: list[tuple[float, float]] = []
            self._epoch_start = 0.0

        def on_train_batch_start(self, *args: Any) -> None:
            self.batch_starts.append(time.perf_counter())

        def on_train_epoch_start(self, *args: Any) -> None:
            self._epoch_start = time.perf_counter()

        def on_train_epoch_end(self, *args: Any) -> None:
            self.epoch_bounds.append((self._epoch_start, time.perf_counter()))

        def step_times(self, skip: int) -> list[float]:
            starts = self.batch_starts
            return [b - a for a, b in zip(starts[skip:], starts[skip + 1 :])]

        def epoch_times(self) -> list[float]:
            return [end - start for start, end in self.epoch_bounds]

    return StepTimer()


# ------------------------------------------------------------------------------------- training-dynamics runs
SMALL_BACKBONE, SMALL_SIZE = "test_resnet", 16  # for the many from-scratch runs of the Goyal/Smith/SWATS tables


def digits_run(
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    optimizer: Callable[[Any], torch.optim.Optimizer],
    lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    scheduler_interval: str = "epoch",
    callbacks: Sequence[Any] = (),
    reload_every_epoch: bool = False,
) -> dict[str, Any]:
    """Train ``SMALL_BACKBONE`` from scratch on all ten digits at ``SMALL_SIZE`` px; score the fixed test split.

    Returns:
        ``acc`` (test accuracy, %), ``steps`` (optimizer steps), ``seconds`` (fit time) and ``schedule`` (the
        :class:`~lit_transfer.callbacks.RunReport` row of every optimizer step: LRs, global batch, optimizer).
    """
    import tempfile

    import lightning as L

    from lit_transfer import TransferClassifier
    from lit_transfer.callbacks import RunReport
    from lit_transfer.data import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(image_size=SMALL_SIZE, batch_size=batch_size, seed=seed)
    model = TransferClassifier(
        SMALL_BACKBONE,
        num_classes=10,
        pretrained=False,
        freeze="full_fine_tune",
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        scheduler_interval=scheduler_interval,  # type: ignore[arg-type]
        warmup_epochs=0,
    )
    with tempfile.TemporaryDirectory() as out:
        report = RunReport(output_dir=out, plots=False, summary=False, confusion_matrix=False)
        trainer = make_trainer(
            max_epochs=epochs,
            limit_val_batches=0,
            callbacks=[*callbacks, report],
            reload_dataloaders_every_n_epochs=1 if reload_every_epoch else 0,
        )
        seconds, _ = timed(lambda: trainer.fit(model, datamodule=data))
        accuracy = test_accuracy(trainer, model, data)
    return {"acc": accuracy, "steps": trainer.global_step, "seconds": seconds, "schedule": list(report.steps)}
