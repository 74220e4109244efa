"""What :class:`~lit_transfer.TransferClassifier` checks in what it is given: arguments, DataModule, checkpoint.

* :func:`check_arguments`: the constructor's numbers, before anything is built.
* :func:`check_classes`: a DataModule's class count and names must be the model's.
* :func:`check_unaugmented`: ``cache_features`` needs the same input for a sample every epoch.
* :func:`check_checkpoint_fits`: a checkpoint must hold every tensor of the model, in its shape.
* :func:`check_task_arguments`: a classifier's ``task`` and its options.
* :func:`check_regressor_arguments`: a regressor's outputs, names, target statistics and loss.
* :func:`dense_targets`: a batch's multi-label, binary or regression targets, checked and shaped ``(N, K)``.

Every DataModule attribute is read with ``getattr`` and a default, so any LightningDataModule (or none) works.
Each error names the argument or attribute, echoes the value and says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.errors import CheckpointMismatchError

__all__ = [
    "check_arguments",
    "check_checkpoint_fits",
    "check_classes",
    "check_regressor_arguments",
    "check_task_arguments",
    "check_training_arguments",
    "check_unaugmented",
    "dense_targets",
]


def check_arguments(
    num_classes: int,
    class_names: list[str] | None,
    layer_decay: float | None,
    label_smoothing: float,
    mixup_alpha: float,
    cutmix_alpha: float,
    warmup_epochs: float,
) -> None:
    """Refuse constructor arguments out of range (``ValueError`` naming the argument and its value).

    Example:
        >>> check_arguments(3, None, layer_decay=1.5, label_smoothing=0, mixup_alpha=0, cutmix_alpha=0, warmup_epochs=1)
        Traceback (most recent call last):
        ...
        ValueError: `layer_decay` must be in (0, 1] (e.g. 0.65-0.9), got 1.5.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but `num_classes` is {num_classes}; they must agree"
            " (the CLI links both from the DataModule)."
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}.")
    check_training_arguments(layer_decay, mixup_alpha, cutmix_alpha, warmup_epochs)


def check_training_arguments(
    layer_decay: float | None, mixup_alpha: float, cutmix_alpha: float, warmup_epochs: float
) -> None:
    """Refuse the training arguments every model has when out of range (``ValueError`` naming the argument)."""
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1] (e.g. 0.65-0.9), got {layer_decay!r}.")
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"`mixup_alpha` and `cutmix_alpha` must be >= 0, got {mixup_alpha!r}, {cutmix_alpha!r}.")
    if warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs!r}.")


def check_regressor_arguments(
    num_outputs: int,
    target_names: list[str] | None,
    target_stats: dict[str, list[float]] | None,
    loss: str,
    huber_delta: float,
) -> None:
    """Refuse :class:`~lit_transfer.TransferRegressor` arguments that do not fit together.

    Example:
        >>> check_regressor_arguments(2, ["age", "height"], {"mean": [30.0], "std": [5.0]}, "mse", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: `target_stats` must be {"mean": [...], "std": [...]} with 2 number(s) each, ...
    """
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"`num_outputs` must be an integer >= 1, got {num_outputs!r}.")
    if target_names is not None and len(target_names) != num_outputs:
        raise ValueError(
            f"`target_names` has {len(target_names)} names but `num_outputs` is {num_outputs}; they must agree"
            " (the CLI links both from the DataModule)."
        )
    if target_stats is not None:
        mean, std = (target_stats.get(k) if isinstance(target_stats, dict) else None for k in ("mean", "std"))
        sizes_ok = isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple))
        if not sizes_ok or len(mean) != num_outputs or len(std) != num_outputs:  # type: ignore[arg-type]
            sizes_ok = False
        values_ok = sizes_ok and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in [*mean, *std]  # type: ignore[misc]
        )
        if not values_ok or not all(v > 0 for v in std):  # type: ignore[union-attr]
            raise ValueError(
                f'`target_stats` must be {{"mean": [...], "std": [...]}} with {num_outputs} number(s) each, every'
                " std positive and all finite (the DataModule's `target_stats`, computed on its training rows),"
                f" got {target_stats!r}."
            )
    losses = ("mse", "l1", "huber")
    if loss not in losses:
        raise ValueError(f"`loss` must be one of {', '.join(map(repr, losses))}, got {loss!r}.")
    if isinstance(huber_delta, bool) or not isinstance(huber_delta, (int, float)) or huber_delta <= 0:
        raise ValueError(f"`huber_delta` must be a positive number, got {huber_delta!r}.")


def check_classes(num_classes: int, class_names: list[str] | None, datamodule: Any, stage: str) -> None:
    """Refuse a DataModule with another number of classes; refuse (warn at ``predict``) other class names.

    Args:
        num_classes: The model's number of classes.
        class_names: The model's class names, if any.
        datamodule: The Trainer's DataModule (``None`` for plain DataLoaders: nothing to check).
        stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

    Raises:
        ValueError: Another class count, or other names (in another order) outside ``predict``.
    """
    theirs = getattr(datamodule, "num_classes", None)
    kind = type(datamodule).__name__
    if isinstance(theirs, int) and not isinstance(theirs, bool) and theirs > 0 and theirs != num_classes:
        raise ValueError(
            f"The DataModule ({kind}) has {theirs} classes but the model was built with `num_classes={num_classes}`:"
            f" labels >= {min(num_classes, theirs)} would not fit the head. Build the model with"
            " `num_classes=datamodule.num_classes` (and `class_names=datamodule.class_names`; the CLI links both),"
            " or use the DataModule the model was trained on."
        )
    data_names = getattr(datamodule, "class_names", None)
    if not class_names or not data_names or [str(n) for n in class_names] == [str(n) for n in data_names]:
        return
    same = sorted(map(str, class_names)) == sorted(map(str, data_names))
    message = (
        f"The model's `class_names` {list(class_names)} differ from the DataModule's ({kind}) {list(data_names)}"
        + (": the same names in another order, so label i means another class to each" if same else "")
        + ". Build the model with `class_names=datamodule.class_names`, or use the DataModule the model was"
        " trained on (to train a checkpoint's weights on other classes, start a model with `pretrained=<.ckpt>`)."
    )
    if stage != "predict":  # labels index the model's classes: metrics and checkpoints would be wrong silently
        raise ValueError(message)
    rank_zero_warn(message + " Predictions are named with the model's classes.")


def check_unaugmented(datamodule: Any) -> None:
    """Refuse a DataModule that augments its training images (``cache_features`` stores one input per sample).

    The DataModule says so through a boolean ``augments_training`` property when it has one; otherwise a
    ``train_transform`` attribute other than ``None``/``"none"`` counts as augmentation (lit_transfer's DataModules
    before they had the property). A DataModule with neither is trusted.

    Args:
        datamodule: The Trainer's DataModule, or ``None``.

    Raises:
        ValueError: The DataModule augments; the message names its ``train_transform`` and the settings to change.
    """
    transform = getattr(datamodule, "train_transform", "none")
    augments = getattr(datamodule, "augments_training", None)
    if not isinstance(augments, bool):
        augments = transform not in (None, "none")
    if not augments:
        return
    shown = f"`train_transform: {transform!r}`" if transform not in (None, "none") else "`augments_training` is True"
    raise ValueError(
        f"`cache_features=True` needs the same input for a sample every epoch, but the DataModule"
        f" ({type(datamodule).__name__}) augments its training images ({shown}). Set the DataModule's"
        " `train_transform: none`, or set `cache_features: false`."
    )


def check_checkpoint_fits(
    current: Mapping[str, torch.Tensor], checkpoint: dict[str, Any], hparams: Mapping[str, Any], head: str
) -> None:
    """Refuse a checkpoint that lacks a tensor of the model, or holds one of another shape.

    Args:
        current: The model's ``state_dict()``.
        checkpoint: The loaded checkpoint.
        hparams: The model's hyper-parameters (``backbone``, named in the message).
        head: The model's head in words (``"3 classes"``, ``"2 outputs"``).

    Raises:
        CheckpointMismatchError: Listing the tensors, with the two ways out (resume with the checkpoint's own
            settings, or load only its backbone weights).
    """
    saved = checkpoint.get("hyper_parameters", {})
    state = checkpoint.get("state_dict", {})
    wrong = [k for k in current if k not in state or state[k].shape != current[k].shape]
    if not wrong:
        return
    shown = ", ".join(wrong[:6]) + (f", ... ({len(wrong)} in all)" if len(wrong) > 6 else "")
    raise CheckpointMismatchError(
        f"The checkpoint (a {saved.get('backbone', 'different')!r} model) does not fit this run's"
        f" {hparams['backbone']!r} with {head}: tensors missing or of"
        f" another shape: {shown}. Resume with the"
        " checkpoint's own `backbone` and head (`num_classes`/`num_outputs`, `task`), or start a new run that loads"
        " only its backbone weights"
        " (`pretrained: <checkpoint.ckpt>`)."
    )


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


def check_task_arguments(
    task: str,
    num_classes: int,
    threshold: float,
    tune_threshold: str,
    pos_weight: str | list[float] | None,
) -> None:
    """Refuse a classifier ``task`` and its options that do not fit together (``ValueError`` naming the argument).

    Example:
        >>> check_task_arguments("binary", 3, threshold=0.5, tune_threshold="global", pos_weight=None)
        Traceback (most recent call last):
        ...
        ValueError: `task='binary'` needs `num_classes=2` (the DataModule's two classes; `class_names[1]` is the
        positive class), got 3. ...
    """
    tasks = ("multiclass", "multilabel", "binary")
    if task not in tasks:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, tasks))}, got {task!r}.")
    if task == "binary" and num_classes != 2:
        raise ValueError(
            f"`task='binary'` needs `num_classes=2` (the DataModule's two classes; `class_names[1]` is the positive"
            f" class), got {num_classes}. For more classes use `task='multiclass'`, or `task='multilabel'` for"
            " several labels per image."
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be a probability in (0, 1), got {threshold!r}.")
    modes = ("none", "global", "per_label")
    if tune_threshold not in modes:
        raise ValueError(f"`tune_threshold` must be one of {', '.join(map(repr, modes))}, got {tune_threshold!r}.")
    if pos_weight is None:
        return
    if task == "multiclass":
        raise ValueError(
            "`pos_weight` weighs the positives of a sigmoid loss: it needs `task='multilabel'` or `task='binary'`"
            f" (got `task='multiclass'`, `pos_weight={pos_weight!r}`). Leave `pos_weight` unset."
        )
    width = 1 if task == "binary" else num_classes
    if isinstance(pos_weight, str):
        if pos_weight != "auto":
            raise ValueError(
                f"`pos_weight` must be 'auto', a list of {width} positive numbers or None, got {pos_weight!r}."
            )
        return
    values = list(pos_weight)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
    if len(values) != width or not numbers:
        raise ValueError(
            f"`pos_weight` must hold {width} positive number{'s' if width > 1 else ''} (one per"
            f" {'label' if task == 'multilabel' else 'positive class'}), got {pos_weight!r}; or use 'auto'."
        )
