"""What :class:`~lit_transfer.TransferClassifier` checks in what it is given: arguments, DataModule, checkpoint.

* :func:`check_arguments`: the constructor's numbers, before anything is built.
* :func:`check_classes`: a DataModule's class count and names must be the model's.
* :func:`check_unaugmented`: ``cache_features`` needs the same input for a sample every epoch.
* :func:`check_checkpoint_fits`: a checkpoint must hold every tensor of the model, in its shape.

Every DataModule attribute is read with ``getattr`` and a default, so any LightningDataModule (or none) works.
Each error names the argument or attribute, echoes the value and says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.errors import CheckpointMismatchError

__all__ = ["check_arguments", "check_checkpoint_fits", "check_classes", "check_unaugmented"]


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
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1] (e.g. 0.65-0.9), got {layer_decay!r}.")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}.")
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"`mixup_alpha` and `cutmix_alpha` must be >= 0, got {mixup_alpha!r}, {cutmix_alpha!r}.")
    if warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs!r}.")


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
    current: Mapping[str, torch.Tensor], checkpoint: dict[str, Any], hparams: Mapping[str, Any]
) -> None:
    """Refuse a checkpoint that lacks a tensor of the model, or holds one of another shape.

    Args:
        current: The model's ``state_dict()``.
        checkpoint: The loaded checkpoint.
        hparams: The model's hyper-parameters (``backbone``, ``num_classes``, named in the message).

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
        f" {hparams['backbone']!r} with {hparams['num_classes']} classes: tensors missing or of"
        f" another shape: {shown}. Resume with the"
        " checkpoint's own `backbone`/`num_classes`, or start a new run that loads only its backbone weights"
        " (`pretrained: <checkpoint.ckpt>`)."
    )
