"""The preprocessing a :class:`~lit_transfer.TransferClassifier` was trained with, kept with its weights.

:class:`TrainedPreprocessing` starts as the backbone's timm data config, records the DataModule's
``resolved_config`` at ``fit``, is saved in checkpoints under the top-level key ``"data_config"`` (plain values,
loadable with ``weights_only=True``) and restored from them, so that export and prediction use the size and
normalisation the model learned from. Another stage's DataModule that differs from it gets a warning.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.data.preprocessing import DataConfig, describe_preprocessing, same_preprocessing

__all__ = ["TrainedPreprocessing", "plain_data_config", "warn_if_preprocessing_differs"]


class TrainedPreprocessing:
    """The preprocessing a model was trained with, as a timm-style data config of plain values.

    It starts as the backbone's timm config (``source == "backbone"``); ``fit`` records the DataModule's
    ``resolved_config`` (``"datamodule"``); a checkpoint that carries one restores it (``"checkpoint"``). Only a
    recorded or restored config is saved in checkpoints.

    Args:
        backbone_config: The backbone's own data config.

    Example:
        >>> record = TrainedPreprocessing({"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3})
        >>> checkpoint = {}
        >>> record.save(checkpoint)  # nothing recorded yet: checkpoints do not carry the backbone's config
        >>> checkpoint
        {}
    """

    def __init__(self, backbone_config: dict[str, Any]) -> None:
        self.config = backbone_config
        self.source: Literal["backbone", "datamodule", "checkpoint"] = "backbone"

    def record(self, datamodule: Any, stage: str) -> None:
        """At ``fit``, take the DataModule's ``resolved_config``; at other stages, warn when it differs."""
        resolved = getattr(datamodule, "resolved_config", None)
        if not isinstance(resolved, DataConfig):
            return
        if stage == "fit":
            self.config, self.source = resolved.to_dict(), "datamodule"
        elif self.source != "backbone":
            warn_if_preprocessing_differs(resolved.to_dict(), self.config, "this model was trained with", stage)

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Store a recorded config under the top-level key ``"data_config"`` (plain values only)."""
        if self.source != "backbone":
            checkpoint["data_config"] = plain_data_config(self.config)

    def restore(self, checkpoint: dict[str, Any], trainer: Any) -> None:
        """Take the checkpoint's ``"data_config"``, unless a resumed ``fit`` already recorded its DataModule's.

        Resuming ``fit`` keeps the config this run's DataModule gave at ``setup`` and warns when the two differ;
        loading for ``validate``/``test``/``predict`` warns when the DataModule's differs from the checkpoint's.
        """
        saved = checkpoint.get("data_config")
        if not isinstance(saved, dict):
            return
        stage = str(trainer.state.fn.value) if trainer is not None and trainer.state.fn is not None else None
        if stage == "fit" and self.source == "datamodule":  # resumed: this run's DataModule rules
            warn_if_preprocessing_differs(self.config, saved, "the checkpoint was trained with", "fit")
            return
        self.config, self.source = dict(saved), "checkpoint"
        resolved = getattr(getattr(trainer, "datamodule", None), "resolved_config", None)
        if stage is not None and isinstance(resolved, DataConfig):
            warn_if_preprocessing_differs(resolved.to_dict(), saved, "the checkpoint was trained with", stage)


def plain_data_config(data_config: dict[str, Any]) -> dict[str, Any]:
    """``data_config`` with tuples as lists and numbers as Python scalars (loadable with ``weights_only=True``).

    Example:
        >>> plain_data_config({"input_size": (3, 8, 8), "interpolation": "bilinear", "crop_pct": 0.9})
        {'input_size': [3, 8, 8], 'interpolation': 'bilinear', 'crop_pct': 0.9}
    """
    plain: dict[str, Any] = {}
    for key, value in data_config.items():
        if isinstance(value, (list, tuple)):
            plain[key] = [v if isinstance(v, (int, float, str)) else float(v) for v in value]
        else:
            plain[key] = value if isinstance(value, (int, float, str)) or value is None else str(value)
    return plain


def warn_if_preprocessing_differs(data_config: dict[str, Any], trained: dict[str, Any], what: str, stage: str) -> None:
    """Warn when ``data_config`` (the DataModule's) differs from ``trained`` in size, mean or std."""
    if same_preprocessing(trained, data_config):
        return
    height = int(trained["input_size"][1])
    rank_zero_warn(
        f"The DataModule's preprocessing ({describe_preprocessing(data_config)}) differs from the one {what}"
        f" ({describe_preprocessing(trained)}): the `{stage}` inputs are not what the model learned from. Build the"
        " DataModule with that `data_config` (`model.data_config`, or"
        f" `torch.load(checkpoint, weights_only=True)['data_config']`) and `image_size={height}` (or `None`)."
    )
