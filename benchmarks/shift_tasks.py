"""The two shifts of the ``shift`` benchmark, its policies and one fine-tuning run.

- **output-level shift**: the quick start's source model (digits 0-4) -> digits 5-9, clean scans. The input
  distribution is the same; the labels are new.
- **input-level shift**: a source model trained on all ten digits -> the same ten digits with inverted intensity
  (``255 - v`` on every scan of every split, :class:`InvertedDigits`). The labels are the same; the pixels are
  ones the source model never saw (white background, dark strokes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from lit_transfer.data import DigitsDataModule

IMAGE_SIZE = 32
LAYER_DECAY = 0.7
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
FALLBACK = f"LP-FT at epoch 1 + layer decay {LAYER_DECAY} (auto's fallback)"
"""The control row: ``auto``'s stated default (one head-only epoch, then every group with layer decay), as a fixed
policy."""


class InvertedDigits(DigitsDataModule):
    """:class:`~lit_transfer.data.DigitsDataModule` with inverted intensity: every scan of every split is ``255 - v``.

    A deterministic input corruption (no randomness, the same for train, validation and test scans); the splits,
    labels and few-shot draws are those of the clean module with the same arguments.

    Example:
        >>> clean, inverted = DigitsDataModule(), InvertedDigits()
        >>> a, b = clean._splits()[0], inverted._splits()[0]
        >>> bool((a.astype(int) + b == 255).all())
        True
    """

    def _splits(self) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
        images, digits, splits = super()._splits()
        return 255 - images, digits, splits


@dataclass(frozen=True)
class ShiftTask:
    """One source -> target pair.

    Attributes:
        key: Short name (``output`` or ``input``).
        title: Human-readable name.
        source_classes: Digits the source model is trained on (clean scans).
        target_classes: Digits of the target task.
        inverted: Whether the target's scans are inverted (:class:`InvertedDigits`).
        backbone: The timm architecture of the source and target models (default: :data:`common.BACKBONE`).
    """

    key: str
    title: str
    source_classes: tuple[int, ...]
    target_classes: tuple[int, ...]
    inverted: bool
    backbone: str = common.BACKBONE
    image_size = IMAGE_SIZE  # a class attribute here; :class:`~benchmarks.heldout_tasks.HeldoutTask` makes it a field

    def datamodule(self, shots: int | None, seed: int, **kwargs: Any) -> DigitsDataModule:
        """The target task's DataModule (``shots`` scans per class, drawn with ``seed``) at :attr:`image_size` px."""
        cls = InvertedDigits if self.inverted else DigitsDataModule
        return cls(classes=self.target_classes, shots_per_class=shots, image_size=self.image_size, seed=seed, **kwargs)


def task_sources(tasks: Sequence[ShiftTask], source_epochs: int | None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each task's source model by key: :func:`common.source_weights` at the task's input size, of its source
    classes and backbone, trained for ``source_epochs`` (cached)."""
    return {
        t.key: common.source_weights(t.image_size, epochs=source_epochs, classes=t.source_classes, backbone=t.backbone)
        for t in tasks
    }


TASKS = (
    ShiftTask("output", "output-level shift: digits 0-4 -> 5-9", common.SOURCE_CLASSES, common.TARGET_CLASSES, False),
    ShiftTask("input", "input-level shift: 0-9 -> 0-9 inverted", tuple(range(10)), tuple(range(10)), True),
)


def augmentation() -> list[dict[str, Any]]:
    """The digit-safe training augmentation of the quick start (Albumentations ``Affine``, no flips)."""
    from lit_transfer.demo.source_model import DIGIT_AUGMENT

    return list(json.loads(DIGIT_AUGMENT))


def policies(epochs: int) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The policies side by side: name -> ``TransferClassifier`` arguments, and name -> why it cannot run here.

    ``first group + head``, ``last group + head`` and ``auto`` need ``SurgicalFineTune`` and ``AutoFreeze`` of
    :mod:`lit_transfer.freezing`; where the installed package lacks them they are listed as not run.
    """
    from lit_transfer import freezing

    unfreeze = max(1, epochs // 3)
    every = max(1, epochs // 8)
    table: dict[str, dict[str, Any]] = {"linear probe": {"freeze": freezing.LinearProbe()}}
    missing: dict[str, str] = {}
    surgical = getattr(freezing, "SurgicalFineTune", None)
    for name, groups in (("first group + head", [0]), ("last group + head", [-2])):
        if surgical is None:
            missing[name] = "lit_transfer.freezing.SurgicalFineTune is not available"
        else:
            table[name] = {"freeze": surgical(groups=groups)}
    table[f"LP-FT (unfreeze at epoch {unfreeze})"] = {"freeze": freezing.FreezeUnfreeze(unfreeze_at_epoch=unfreeze)}
    table[f"gradual unfreeze (every {every} epochs)"] = {"freeze": freezing.GradualUnfreeze(every_n_epochs=every)}
    table["full fine-tune"] = {"freeze": freezing.FullFineTune()}
    table[f"full fine-tune + layer decay {LAYER_DECAY}"] = {
        "freeze": freezing.FullFineTune(),
        "layer_decay": LAYER_DECAY,
    }
    table[FALLBACK] = {"freeze": freezing.FreezeUnfreeze(unfreeze_at_epoch=1), "layer_decay": LAYER_DECAY}
    if getattr(freezing, "AutoFreeze", None) is None:
        missing["auto"] = "lit_transfer.freezing.AutoFreeze is not available"
    else:
        table["auto"] = {"freeze": "auto"}
        table["auto (one lr for every task)"] = {"freeze": "auto"}  # benchmarks.shift.AUTO_SHARED
    return table, missing


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def rank_zero_logger() -> logging.Logger:
    """The logger of Lightning's ``rank_zero_info``, through which LayerFreezing and AutoFreeze announce decisions
    (Lightning points it at its own logger when it is imported, so it is looked up, not named)."""
    import lightning.pytorch  # noqa: F401  (sets the logger)
    from lightning_utilities.core import rank_zero

    return rank_zero.log


@contextmanager
def captured_info() -> Iterator[list[str]]:
    """Collect the ``rank_zero_info`` messages while the block runs (without printing them)."""
    log = rank_zero_logger()
    handler, level, propagate = _Lines(), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def fine_tune(
    task: ShiftTask,
    spec: dict[str, Any],
    weights: str,
    *,
    shots: int,
    seed: int,
    epochs: int,
    lr: float,
    split: str,
    limit_eval_batches: int | None = None,
    backbone: str | None = None,
) -> tuple[float, list[str]]:
    """Fine-tune the source ``weights`` on ``task`` with one policy; score the final weights on ``split``.

    Args:
        task: The shift.
        spec: ``TransferClassifier`` arguments of the policy (``freeze``, optionally ``layer_decay`` and
            ``probe_views``).
        weights: Source backbone (safetensors, no head).
        shots: Training scans per class.
        seed: Draw of the scans, head initialisation, order and augmentation.
        epochs: Training epochs.
        lr: AdamW learning rate.
        split: ``"val"`` (the validation scans, for choosing settings) or ``"test"`` (held-out scans).
        limit_eval_batches: Score only this many batches of ``split`` (``--quick``); all by default.
        backbone: The timm architecture of ``weights`` (default: the task's, :data:`common.BACKBONE` unless set).

    Returns:
        The accuracy (%) on ``split`` and the ``lit_transfer`` INFO lines logged during the run.
    """
    model, data = build(task, spec, weights, shots=shots, seed=seed, lr=lr, backbone=backbone)
    accuracy, lines, _ = fit_and_score(model, data, epochs=epochs, split=split, limit_eval_batches=limit_eval_batches)
    return accuracy, lines


def build(
    task: ShiftTask,
    spec: dict[str, Any],
    weights: str,
    *,
    shots: int,
    seed: int,
    lr: float,
    backbone: str | None = None,
) -> tuple[Any, DigitsDataModule]:
    """The seeded model and DataModule a :func:`fine_tune` run starts from (same arguments)."""
    import lightning as L
    import torch

    from lit_transfer import TransferClassifier

    L.seed_everything(seed, verbose=False)
    data = task.datamodule(
        shots, seed, batch_size=min(16, len(task.target_classes) * shots), train_transform=augmentation()
    )
    model = TransferClassifier(
        backbone or task.backbone,
        num_classes=data.num_classes,
        pretrained=weights,
        freeze=spec["freeze"],
        layer_decay=spec.get("layer_decay"),
        probe_views=spec.get("probe_views", 0),
        label_smoothing=LABEL_SMOOTHING,
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=lr, weight_decay=WEIGHT_DECAY),
    )
    return model, data


def fit_and_score(
    model: Any,
    data: DigitsDataModule,
    *,
    epochs: int,
    split: str,
    limit_eval_batches: int | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[float, list[str], float]:
    """Train a :func:`build` pair as :func:`fine_tune` does, with ``callbacks`` added to the Trainer; its accuracy on
    ``split``, INFO lines and fit time (s)."""
    limit = 1.0 if limit_eval_batches is None else limit_eval_batches
    trainer = common.make_trainer(
        max_epochs=epochs, limit_val_batches=0, limit_test_batches=limit, callbacks=list(callbacks)
    )
    with captured_info() as lines:
        seconds, _ = common.timed(lambda: trainer.fit(model, datamodule=data))
    if split == "test":
        return common.test_accuracy(trainer, model, data), lines, seconds
    scores = common.make_trainer(limit_val_batches=limit).validate(model, datamodule=data, verbose=False)
    return 100.0 * float(scores[0]["val_acc"]), lines, seconds


def _init_worker() -> None:
    common.set_threads(1)
    common.quiet()


def _fine_tune_job(job: dict[str, Any]) -> tuple[float, list[str]]:
    return fine_tune(**job)


def fine_tune_all(
    jobs: list[dict[str, Any]],
    workers: int = 1,
    label: str = "",
    runner: Callable[[dict[str, Any]], Any] = _fine_tune_job,
) -> list[Any]:
    """:func:`fine_tune` for every job (its keyword arguments), in order; ``workers > 1`` runs them in that many
    spawned processes of one thread each (every run is seeded by its own arguments, so the results do not depend
    on which process ran it). ``runner`` replaces the call of :func:`fine_tune` on one job's arguments (a module-level
    function, for the spawned processes); by default each result is ``(accuracy, INFO lines)``."""
    import multiprocessing
    import sys

    results: list[Any] = []
    if workers <= 1:
        iterator: Any = map(runner, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        iterator = pool.imap(runner, jobs)
    try:
        for done, result in enumerate(iterator, 1):
            results.append(result)
            if done % 10 == 0 or done == len(jobs):
                print(f"[shift] {label}: {done}/{len(jobs)} runs", file=sys.stderr, flush=True)
    finally:
        if pool is not None and len(results) == len(jobs):
            pool.close()
            pool.join()
        elif pool is not None:  # an error or an interrupt: stop the workers now
            pool.terminate()
            pool.join()
    return results
