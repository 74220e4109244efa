"""Where a ``lit-transfer`` run's files go: its default callbacks and loggers, and its checkpoints.

A ``fit`` writes ``<default_root_dir>/lightning_logs/version_N/`` (logs, ``config.yaml``, the run report and
``checkpoints/`` with ``best.ckpt``, ``last.ckpt`` and, after an interruption, ``on_exception.ckpt``). Evaluating a
checkpoint of such a run (``validate``, ``test``, ``predict``) writes into ``version_N/<subcommand>/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter, Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lit_transfer.callbacks import ExceptionCheckpoint, RunReport
from lit_transfer.callbacks.prediction_writer import PredictionCSVWriter
from lit_transfer.tasks import MONITOR

__all__ = [
    "LOGS_NAME",
    "default_callbacks",
    "default_loggers",
    "evaluation_dir",
    "find_last_checkpoint",
    "merge_callbacks",
    "run_dir_of",
]

LOGS_NAME = "lightning_logs"
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")


def default_callbacks(
    subcommand: str | None,
    has_logger: bool,
    checkpointing: bool,
    output_dir: Path | None = None,
    task: str = "multiclass",
) -> list[Callback]:
    """The callbacks every run of ``subcommand`` gets unless one of the same type is already configured.

    Args:
        subcommand: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` (or ``None`` outside a subcommand).
        has_logger: Whether the Trainer logs (the LR monitor needs a logger).
        checkpointing: Whether ``trainer.enable_checkpointing`` is on.
        output_dir: Where ``predict`` writes ``predictions.csv`` (default: the Trainer's ``default_root_dir``).
        task: The model's task, which picks what ``best.ckpt`` is best by (:data:`lit_transfer.tasks.MONITOR`).

    Returns:
        Fresh callback instances.
    """
    if subcommand == "predict":
        return [PredictionCSVWriter(output_dir / "predictions.csv" if output_dir is not None else None)]
    if subcommand == "test":
        return [RunReport()]
    if subcommand not in (None, "fit"):
        return []
    callbacks: list[Callback] = []
    if checkpointing:
        monitor, mode = MONITOR.get(task, MONITOR["multiclass"])
        best = ModelCheckpoint(monitor=monitor, mode=mode, filename="best", enable_version_counter=False)
        last = ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False)  # every epoch
        callbacks += [best, last, ExceptionCheckpoint()]
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks.append(RunReport())
    return callbacks


def merge_callbacks(configured: list[Callback], defaults: Iterable[Callback]) -> list[Callback]:
    """Append each default whose type (or, for prediction writers, base type) is not among ``configured``."""
    merged = list(configured)
    for callback in defaults:
        kind = BasePredictionWriter if isinstance(callback, BasePredictionWriter) else type(callback)
        if not any(isinstance(c, kind) for c in configured):
            merged.append(callback)
    return merged


def default_loggers(root_dir: str | os.PathLike, evaluation_dir: Path | None = None) -> list[Any]:
    """TensorBoard and CSV loggers writing into one folder.

    That folder is ``<root>/lightning_logs/version_N`` (a new N), or ``evaluation_dir`` when an evaluation writes
    into the run it evaluates.
    """
    if evaluation_dir is not None:
        save_dir, name, version = str(evaluation_dir.parent), "", evaluation_dir.name
        csv = CSVLogger(save_dir=save_dir, name=name, version=version)
    else:
        csv = CSVLogger(save_dir=str(root_dir), name=LOGS_NAME)
        save_dir, name, version = str(root_dir), LOGS_NAME, f"version_{csv.version}"
    tensorboard = TensorBoardLogger(save_dir=save_dir, name=name, version=version)
    return [csv, tensorboard]  # CSV first: it creates the folder (it warns when it finds one already filled)


def find_last_checkpoint(root_dir: str | os.PathLike, which: str = "last") -> Path | None:
    """The newest ``last.ckpt`` (or ``best.ckpt``) under ``<root_dir>/lightning_logs/version_*/checkpoints/``.

    Args:
        root_dir: The Trainer's ``default_root_dir``.
        which: ``"last"`` (the end of a run's newest epoch) or ``"best"`` (by the task's metric,
            :data:`lit_transfer.tasks.MONITOR`).

    Returns:
        Path of the most recently written such file (``last-v1.ckpt`` and the like included), or ``None``.
    """
    candidates = list(Path(root_dir, LOGS_NAME).glob(f"version_*/checkpoints/{which}*.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def run_dir_of(ckpt_path: str | os.PathLike | None) -> Path | None:
    """The run folder a checkpoint belongs to (``.../version_N`` for ``.../version_N/checkpoints/x.ckpt``)."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def evaluation_dir(subcommand: str | None, ckpt_path: str | os.PathLike | None) -> Path | None:
    """``<run>/<subcommand>`` when ``validate``/``test``/``predict`` evaluate a checkpoint of a run, else ``None``."""
    if subcommand not in EVALUATION_SUBCOMMANDS:
        return None
    run = run_dir_of(ckpt_path)
    return run / str(subcommand) if run is not None else None
