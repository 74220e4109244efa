"""Where a ``lit-transfer`` run's files go: its default callbacks and loggers, and its checkpoints.

A ``fit`` writes ``<default_root_dir>/lightning_logs/version_N/`` (logs, ``config.yaml``, the run report and
``checkpoints/`` with ``best.ckpt``, ``last.ckpt`` and, after an interruption, ``on_exception.ckpt``). Evaluating a
checkpoint of such a run (``validate``, ``test``, ``predict``) writes into ``version_N/<subcommand>/``.

``version_N`` is claimed with an ``mkdir`` that fails when the folder exists (:func:`claim_version_dir`), retried
with the next number, so runs started together in one ``default_root_dir`` never share a folder. Only the process
of global rank 0 claims; the processes Lightning launches for the other ranks inherit the claimed folder through
the environment (:data:`RUN_DIR_ENV`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter, Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lit_transfer.callbacks import ExceptionCheckpoint, RunReport, SegmentationMaskWriter
from lit_transfer.callbacks.prediction_writer import PredictionCSVWriter
from lit_transfer.tasks import MONITOR

__all__ = [
    "LOGS_NAME",
    "RUN_DIR_ENV",
    "checkpoint_candidates",
    "claim_version_dir",
    "default_callbacks",
    "default_loggers",
    "evaluation_dir",
    "find_last_checkpoint",
    "merge_callbacks",
    "run_dir_of",
]

LOGS_NAME = "lightning_logs"
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")
RUN_DIR_ENV = "LIT_TRANSFER_RUN_DIR"
"""``<pid>:<folder>``: the run folder the process ``<pid>`` claimed, for the rank processes it launches."""
_VERSION = re.compile(r"version_(\d+)$")


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
        output_dir: Where ``predict`` writes ``predictions.csv``, or a segmenter's ``masks/`` and ``overlays/``
            (default: the Trainer's ``default_root_dir``).
        task: The model's task, which picks what ``best.ckpt`` is best by (:data:`lit_transfer.tasks.MONITOR`).

    Returns:
        Fresh callback instances.
    """
    if subcommand == "predict" and task == "segmentation":
        return [SegmentationMaskWriter(output_dir)]  # <output_dir>/masks/<name>.png, a few overlays
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


def _versions(parent: Path) -> list[int]:
    try:
        names = [entry.name for entry in os.scandir(parent) if entry.is_dir()]
    except FileNotFoundError:
        return []
    return [int(found.group(1)) for name in names if (found := _VERSION.match(name))]


def claim_version_dir(root_dir: str | os.PathLike, name: str = LOGS_NAME, attempts: int = 1000) -> Path:
    """Create and return a new ``<root_dir>/<name>/version_N`` folder that no other run has.

    ``N`` starts after the highest existing version; the folder is made with :func:`os.mkdir`, which fails when
    another process made it first, and then the next ``N`` is tried. Two runs started together therefore get two
    folders.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> claim_version_dir(root).name, claim_version_dir(root).name
        ('version_0', 'version_1')
    """
    parent = Path(root_dir, name)
    parent.mkdir(parents=True, exist_ok=True)
    number = max(_versions(parent), default=-1) + 1
    for _ in range(attempts):
        folder = parent / f"version_{number}"
        try:
            os.mkdir(folder)
        except FileExistsError:
            number += 1
            continue
        return folder
    raise FileExistsError(f"Could not claim a new version folder under {str(parent)!r} after {attempts} tries.")


def _is_global_zero() -> bool:
    """Whether this process is the one that claims the run folder (global rank 0 before the Trainer exists)."""
    return getattr(rank_zero_only, "rank", 0) == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def _run_dir(root_dir: str | os.PathLike) -> Path:
    """This run's folder: claimed here (global rank 0), else inherited from the launching process, else the newest."""
    if _is_global_zero():
        claimed = claim_version_dir(root_dir)
        os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{claimed}"  # the rank processes Lightning starts inherit it
        return claimed
    pid, _, folder = os.environ.get(RUN_DIR_ENV, "").partition(":")
    if folder and pid.isdigit() and int(pid) == os.getppid():
        return Path(folder)
    parent = Path(root_dir, LOGS_NAME)  # a rank started by torchrun or SLURM: rank 0 writes, log_dir is broadcast
    return parent / f"version_{max(_versions(parent), default=0)}"


def default_loggers(root_dir: str | os.PathLike, evaluation_dir: Path | None = None) -> list[Any]:
    """TensorBoard and CSV loggers writing into one folder.

    That folder is a newly claimed ``<root>/lightning_logs/version_N`` (:func:`claim_version_dir`), or
    ``evaluation_dir`` when an evaluation writes into the run it evaluates.
    """
    if evaluation_dir is not None:
        save_dir, name, version = str(evaluation_dir.parent), "", evaluation_dir.name
    else:
        run = _run_dir(root_dir)
        save_dir, name, version = str(run.parent.parent), run.parent.name, run.name
    numbered = _VERSION.match(version)  # `version_N` as N: the progress bar's v_num is N, not the name's last 4 chars
    logged: int | str = int(numbered.group(1)) if numbered else version
    csv = CSVLogger(save_dir=save_dir, name=name, version=logged)
    tensorboard = TensorBoardLogger(save_dir=save_dir, name=name, version=logged)
    return [csv, tensorboard]  # CSV first: the Trainer's log_dir (and the checkpoints' folder) is the first logger's


def checkpoint_candidates(root_dir: str | os.PathLike, which: str = "last") -> list[Path]:
    """Every ``last*.ckpt`` (or ``best*.ckpt``) of ``<root_dir>/lightning_logs/version_*/checkpoints/``, newest first.

    Newest by modification time, the run folder's version breaking ties.
    """

    def key(path: Path) -> tuple[float, int]:
        found = _VERSION.match(path.parent.parent.name)
        return path.stat().st_mtime, int(found.group(1)) if found else -1

    candidates = [p for p in Path(root_dir, LOGS_NAME).glob(f"version_*/checkpoints/{which}*.ckpt") if p.is_file()]
    return sorted(candidates, key=key, reverse=True)


def find_last_checkpoint(root_dir: str | os.PathLike, which: str = "last") -> Path | None:
    """The newest ``last.ckpt`` (or ``best.ckpt``) under ``<root_dir>/lightning_logs/version_*/checkpoints/``.

    Args:
        root_dir: The Trainer's ``default_root_dir``.
        which: ``"last"`` (the end of a run's newest epoch) or ``"best"`` (by the task's metric,
            :data:`lit_transfer.tasks.MONITOR`).

    Returns:
        Path of the most recently written such file (``last-v1.ckpt`` and the like included), or ``None``. Whether
        it loads is not checked here (the CLI checks, and falls back to the next one).
    """
    candidates = checkpoint_candidates(root_dir, which)
    return candidates[0] if candidates else None


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
