"""PredictionCSVWriter: write ``predict`` results as one CSV row per image, for every task."""

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

from lit_transfer.errors import check_positive_int
from lit_transfer.files.atomic import atomic_open
from lit_transfer.tasks import class_names_of, target_names_of, task_of

__all__ = ["PredictionCSVWriter"]


class PredictionCSVWriter(BasePredictionWriter):
    """Write the predictions of ``trainer.predict`` to a CSV file.

    One row per input, in the order of the predict dataset, starting with ``file`` (from the DataModule's
    ``predict_paths``, or ``#<index>`` when it has none). The other columns follow the model's task:

    * multiclass: ``predicted`` (class name), ``probability``, then ``top1_class``, ``top1_probability`` ...
      ``top{k}_probability``;
    * binary (one probability per image): ``predicted`` (class name) and ``probability_<positive class>``;
    * multi-label (a probability per label): ``predicted`` (the predicted labels, joined by ``label_delimiter``;
      empty when none passes its threshold), then ``probability_<label>`` for every label;
    * regression (``values``): one column per target name, in the targets' original units.

    Class, label and target names come from the model (``class_names``, ``target_names``).

    Rows are collected batch by batch with the dataset indices Lightning tracks; under DDP each rank writes a
    part file and global rank 0 merges them in dataset order (the duplicates a ``DistributedSampler`` pads with
    are dropped).

    The file appears only when every prediction is in it: it is written to a temporary name beside it and renamed
    (:mod:`lit_transfer.files.atomic`). A previous run's file at the same path is removed when ``predict`` starts, so a
    ``predict`` that is interrupted, fails or is killed never leaves an older, complete-looking CSV behind.

    Args:
        output_path: CSV file to write; default ``<trainer.default_root_dir>/predictions.csv``.
        top_k: How many ranked classes to list (capped at the number of classes; multiclass only).
        label_delimiter: What joins the predicted labels of a multi-label model; default: the DataModule's
            ``label_delimiter``, else ``"|"``.

    Example::

        trainer = Trainer(callbacks=[PredictionCSVWriter("out/predictions.csv", top_k=5)])
        trainer.predict(model, datamodule=datamodule, return_predictions=False)
    """

    def __init__(
        self, output_path: str | os.PathLike | None = None, top_k: int = 3, label_delimiter: str | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        check_positive_int("top_k", top_k)
        if label_delimiter is not None and (not isinstance(label_delimiter, str) or not label_delimiter):
            raise ValueError(f"`label_delimiter` must be a non-empty string, got {label_delimiter!r}.")
        self.output_path = output_path
        self.top_k = top_k
        self.label_delimiter = label_delimiter
        self._rows: list[tuple[int, list[Any]]] = []
        self.written_path: Path | None = None

    def resolve_path(self, trainer: Trainer) -> Path:
        """The CSV path for ``trainer``: ``output_path`` or ``<default_root_dir>/predictions.csv``."""
        return Path(self.output_path or Path(trainer.default_root_dir) / "predictions.csv")

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.resolve_path(trainer)
        if trainer.is_global_zero and path.is_file():
            path.unlink()  # an interrupted predict must not leave the previous run's complete-looking file
            rank_zero_info(f"Removed the previous {path}; this predict writes a new one when every image is done.")

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
        task = task_of(pl_module)
        outputs = _outputs(prediction, task)
        start = len(self._rows)
        indices = list(batch_indices) if batch_indices else list(range(start, start + len(outputs)))
        paths = getattr(getattr(trainer, "datamodule", None), "predict_paths", None)
        cells = self._cells(trainer, pl_module, task, prediction, outputs)
        for index, row in zip(indices, cells):
            file = str(paths[index]) if paths is not None and index < len(paths) else f"#{index}"
            self._rows.append((index, [file, *row]))

    def _cells(
        self, trainer: Trainer, pl_module: LightningModule, task: str, prediction: Any, outputs: torch.Tensor
    ) -> list[list[str]]:
        """The cells after ``file`` of each row of one batch."""
        if task == "regression":
            return [[f"{v:.6g}" for v in row] for row in outputs.reshape(len(outputs), -1).tolist()]
        names = class_names_of(pl_module, outputs.shape[-1] if outputs.ndim == 2 else 2)
        if task == "binary":
            preds = _preds(prediction, (outputs >= 0.5).long())
            return [[names[int(c)], f"{p:.6f}"] for c, p in zip(preds.tolist(), outputs.tolist())]
        if task == "multilabel":
            delimiter = self.delimiter(trainer)
            preds = _preds(prediction, (outputs >= 0.5).long())
            return [
                [delimiter.join(n for n, on in zip(names, flags) if on), *(f"{p:.6f}" for p in probs)]
                for flags, probs in zip(preds.tolist(), outputs.tolist())
            ]
        k = min(self.top_k, outputs.shape[-1])
        top_p, top_i = outputs.topk(k, dim=-1)
        return [
            [names[i_row[0]], f"{p_row[0]:.6f}", *(v for j, p in zip(i_row, p_row) for v in (names[j], f"{p:.6f}"))]
            for p_row, i_row in zip(top_p.tolist(), top_i.tolist())
        ]

    def delimiter(self, trainer: Trainer) -> str:
        """What joins predicted labels: ``label_delimiter``, else the DataModule's, else ``"|"``."""
        given = self.label_delimiter or getattr(getattr(trainer, "datamodule", None), "label_delimiter", None)
        return str(given) if given else "|"

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self.resolve_path(trainer)
        header = self.header(pl_module)
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

    def header(self, pl_module: LightningModule) -> list[str]:
        """The CSV header for ``pl_module``'s task (see the class docstring)."""
        task = task_of(pl_module)
        if task == "regression":
            return ["file", *target_names_of(pl_module)]
        hparams = getattr(pl_module, "hparams", {})
        names = class_names_of(pl_module, int(hparams.get("num_classes", 0) or 0))
        if task == "binary":
            return ["file", "predicted", f"probability_{names[-1]}"]
        if task == "multilabel":
            return ["file", "predicted", *(f"probability_{n}" for n in names)]
        k = min(self.top_k, len(names) or self.top_k)
        ranked = [name for i in range(1, k + 1) for name in (f"top{i}_class", f"top{i}_probability")]
        return ["file", "predicted", "probability", *ranked]


def _outputs(prediction: Any, task: str) -> torch.Tensor:
    """The batch's values (regression) or probabilities, on the CPU as float."""
    if isinstance(prediction, dict):
        key = "values" if task == "regression" else "probs"
        if key not in prediction:
            raise ValueError(
                f"PredictionCSVWriter: the model's `predict_step` returned {sorted(prediction)}; a {task} model must"
                f" return {key!r}."
            )
        out = prediction[key]
    else:
        out = torch.as_tensor(prediction)
        if task == "multiclass":
            out = out.softmax(-1)
        elif task in ("binary", "multilabel"):
            out = out.sigmoid()
    return out.detach().float().cpu()


def _preds(prediction: Any, default: torch.Tensor) -> torch.Tensor:
    preds = prediction.get("preds") if isinstance(prediction, dict) else None
    return default if preds is None else preds.detach().cpu().long().reshape(default.shape)


def _write(path: Path, header: list[str], rows: list[tuple[int, list[Any]]], with_index: bool = False) -> None:
    """Write rows in dataset order, atomically; part files keep the dataset index as their first column."""
    with atomic_open(path, "w", newline="") as handle:
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
