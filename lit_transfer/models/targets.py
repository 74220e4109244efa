"""A batch's multi-label, binary or regression targets, checked and shaped ``(N, K)`` for the loss."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["dense_targets"]


def dense_targets(targets: Any, task: str, width: int, check_values: bool) -> torch.Tensor:
    """A batch's targets as float ``(N, width)``, after checking their shape and dtype (and values when asked).

    * ``"multilabel"``: multi-hot ``(N, width)`` in ``[0, 1]`` (float, int or bool).
    * ``"binary"``: class indices 0/1 ``(N,)`` (``(N, 1)`` accepted), the 2-class multiclass targets.
    * ``"regression"``: floating ``(N, width)``; ``(N,)`` when ``width`` is 1.

    Args:
        targets: The batch's targets.
        task: ``"multilabel"``, ``"binary"`` or ``"regression"``.
        width: Number of labels (multilabel), 1 (binary) or number of outputs (regression).
        check_values: Also check the values (one device sync: done at each epoch's first batch).

    Returns:
        Float targets of shape ``(N, width)``.

    Raises:
        ValueError: Naming the shape and dtype found, what the task needs, and the DataModule option to set.

    Example:
        >>> dense_targets(torch.tensor([0, 1, 1]), "binary", 1, check_values=True).tolist()
        [[0.0], [1.0], [1.0]]
        >>> dense_targets(torch.tensor([0, 2, 1]), "multilabel", 3, check_values=True)
        Traceback (most recent call last):
        ...
        ValueError: TransferClassifier(task='multilabel') takes multi-hot targets of shape (N, 3) (float32, 1
        where a label applies), got int64 of shape (3,): class indices, as a multiclass DataModule gives. ...
    """
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"Targets must be a tensor, got {type(targets).__name__}.")
    found = f"{str(targets.dtype).removeprefix('torch.')} of shape {tuple(targets.shape)}"
    indices = not targets.is_floating_point() and targets.ndim == 1
    if task == "multilabel":
        if targets.ndim != 2 or targets.shape[1] != width or targets.is_complex():
            hint = (
                "class indices, as a multiclass DataModule gives. Give the DataModule multi-label data (CSVDataModule:"
                " `label_columns`, one 0/1 column per label, or `label_delimiter`), or build the model with"
                " `task: multiclass`."
                if indices
                else f"Build the model with `num_classes={targets.shape[-1]}` (the DataModule's `num_classes`), or"
                " give the DataModule the model's labels."
            )
            raise ValueError(
                f"TransferClassifier(task='multilabel') takes multi-hot targets of shape (N, {width}) (float32, 1"
                f" where a label applies), got {found}: {hint}"
            )
        dense = targets.float()
        if check_values and dense.numel() and not bool(((dense >= 0) & (dense <= 1)).all()):
            raise ValueError(
                f"Multi-label targets must be in [0, 1] (1 where a label applies), got values from"
                f" {dense.min().item():g} to {dense.max().item():g}."
            )
        return dense
    if task == "binary":
        if targets.ndim == 2 and targets.shape[1] == 1:
            targets = targets[:, 0]
        if targets.ndim != 1:
            raise ValueError(
                f"TransferClassifier(task='binary') takes class indices 0/1 of shape (N,) (a multiclass DataModule"
                f" with 2 classes; `class_names[1]` is the positive class), got {found}. For several labels per image"
                " build a `task: multilabel` model on multi-label data (CSVDataModule: `label_columns` or"
                " `label_delimiter`)."
            )
        dense = targets.float()
        if check_values and dense.numel() and not bool(((dense == 0) | (dense == 1)).all()):
            raise ValueError(
                f"TransferClassifier(task='binary') takes targets 0 or 1, got {sorted(set(dense.unique().tolist()))}."
                " Use a DataModule with exactly 2 classes, or `task: multiclass`."
            )
        return dense[:, None]
    if targets.ndim == 1 and width == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[1] != width or not targets.is_floating_point():
        hint = (
            "class indices, as a classification DataModule gives. Give the DataModule regression data (CSVDataModule:"
            " `target_columns`), or use TransferClassifier."
            if indices
            else f"Build the model with `num_outputs={targets.shape[-1] if targets.ndim else 1}` (the DataModule's"
            " `num_outputs`; the CLI links it)."
        )
        raise ValueError(
            f"TransferRegressor(num_outputs={width}) takes float targets of shape (N, {width}), got {found}: {hint}"
        )
    if check_values and not bool(torch.isfinite(targets).all()):
        raise ValueError("Regression targets must be finite; the batch holds NaN or inf (a missing value?).")
    return targets
