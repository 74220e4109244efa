"""A DataModule checked against the model at ``setup``: class count and names, unaugmented data for the cache.

Every DataModule attribute is read with ``getattr`` and a default, so any LightningDataModule (or none) works. The
data's task is checked by :func:`lit_transfer.tasks.check_data_task`.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.errors import is_int

__all__ = ["check_classes", "check_unaugmented"]


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
    if is_int(theirs) and theirs > 0 and theirs != num_classes:
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
