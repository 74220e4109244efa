"""PredictionCSVWriter: write ``predict`` results as one CSV row per image."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

__all__ = ["PredictionCSVWriter"]


class PredictionCSVWriter(BasePredictionWriter):
    """Write the predictions of ``trainer.predict`` to a CSV file.

    One row per input, in the order of the predict dataset: ``file`` (from the DataModule's ``predict_paths``,
    or ``#<index>`` when it has none), ``predicted`` (class name), ``probability``, then ``top1_class``,
    ``top1_probability`` ... ``top{k}_probability``. Class names come from the model's ``class_names``.

    Rows are collected batch by batch with the dataset indices Lightning tracks; under DDP each rank writes a
    part file and global rank 0 merges them in dataset order (the duplicates a ``DistributedSampler`` pads with
    are dropped).

    Args:
        output_path: CSV file to write; default ``<trainer.default_root_dir>/predictions.csv``.
        top_k: How many ranked classes to list (capped at the number of classes).

    Example::

        trainer = Trainer(callbacks=[PredictionCSVWriter("out/predictions.csv", top_k=5)])
        trainer.predict(model, datamodule=datamodule, return_predictions=False)
    """

    def __init__(self, output_path: str | os.PathLike | None = None, top_k: int = 3) -> None:
        super().__init__(write_interval="batch")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
        self.output_path = output_path
        self.top_k = top_k
        self._rows: list[tuple[int, list[Any]]] = []
        self.written_path: Path | None = None

    def resolve_path(self, trainer: Trainer) -> Path:
        """The CSV path for ``trainer``: ``output_path`` or ``<default_root_dir>/predictions.csv``."""
        return Path(self.output_path or Path(trainer.default_root_dir) / "predictions.csv")

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probs = prediction["probs"] if isinstance(prediction, dict) else torch.as_tensor(prediction).softmax(-1)
        probs = probs.detach().float().cpu()
        start = len(self._rows)
        indices = list(batch_indices) if batch_indices else list(range(start, start + len(probs)))
        names = _class_names(pl_module, probs.shape[-1])
        paths = getattr(getattr(trainer, "datamodule", None), "predict_paths", None)
        k = min(self.top_k, probs.shape[-1])
        top_p, top_i = probs.topk(k, dim=-1)
        for index, p_row, i_row in zip(indices, top_p.tolist(), top_i.tolist()):
            file = str(paths[index]) if paths is not None and index < len(paths) else f"#{index}"
            ranked = [value for j, p in zip(i_row, p_row) for value in (names[j], f"{p:.6f}")]
            self._rows.append((index, [file, names[i_row[0]], f"{p_row[0]:.6f}", *ranked]))

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.resolve_path(trainer)
        num_classes = len(_class_names(pl_module, 0)) or int(pl_module.hparams.get("num_classes", self.top_k))
        header = _header(min(self.top_k, num_classes))
        if trainer.world_size == 1:
            _write(path, header, self._rows)
        else:
            part = path.with_name(f"{path.name}.part{trainer.global_rank}")
            _write(part, header, self._rows, with_index=True)
            trainer.strategy.barrier("prediction_csv")
            if trainer.is_global_zero:
                parts = [path.with_name(f"{path.name}.part{r}") for r in range(trainer.world_size)]
                _write(path, header, _read_parts(parts))
                for p in parts:
                    p.unlink()
            trainer.strategy.barrier("prediction_csv_merged")
        self.written_path = path
        rank_zero_info(f"Predictions for {_count(path)} images written to {path}")


def _class_names(pl_module: LightningModule, num_classes: int) -> list[str]:
    names = getattr(pl_module, "class_names", None)
    if names:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _header(k: int) -> list[str]:
    ranked = [name for i in range(1, k + 1) for name in (f"top{i}_class", f"top{i}_probability")]
    return ["file", "predicted", "probability", *ranked]


def _write(path: Path, header: list[str], rows: list[tuple[int, list[Any]]], with_index: bool = False) -> None:
    """Write rows in dataset order; part files keep the dataset index as their first column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", *header] if with_index else header)
        for index, row in sorted(rows, key=lambda item: item[0]):
            writer.writerow([index, *row] if with_index else row)


def _read_parts(parts: list[Path]) -> list[tuple[int, list[Any]]]:
    rows: dict[int, list[Any]] = {}
    for part in parts:
        with part.open(newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            for line in reader:
                rows.setdefault(int(line[0]), line[1:])  # DistributedSampler pads with repeats: keep the first
    return list(rows.items())


def _count(path: Path) -> int:
    with path.open(newline="") as handle:
        return max(0, sum(1 for _ in handle) - 1)
