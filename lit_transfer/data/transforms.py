"""Training presets and the evaluation transform, both sized and normalised from the backbone's data config.

Every resize goes through Pillow, antialiased, as timm's own transforms do (see :mod:`lit_transfer.data.resize`):
the evaluation transform is timm's ``create_transform(is_training=False)`` geometry, and the presets' random crops
are resized the same way, so a 4000x3000 photo does not alias on its way to 224 px.

Presets (generic: a dataset where flips change the meaning, such as digits, should use ``"none"`` or its own
pipeline):

- ``none``: the evaluation geometry (resize, center crop), no augmentation;
- ``light``: ``RandomResizedCrop(scale=(0.6, 1))`` (its crop resized by Pillow) + ``HorizontalFlip``;
- ``medium``: ``RandomResizedCrop(scale=(0.35, 1))`` + flip + small ``Affine`` + ``ColorJitter``;
- ``heavy``: ``RandomResizedCrop(scale=(0.2, 1))`` + flip + stronger ``Affine`` + ``ColorJitter`` + ``ToGray`` +
  blur or noise + ``CoarseDropout``.

Each ends with ``Normalize(mean, std)`` → ``ToTensorV2``, so images become float32 CHW tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard

import albumentations as A

from lit_transfer.data.pipeline import PipelineSpec, check_tail, finalize_pipeline, load_pipeline
from lit_transfer.data.preprocessing import DataConfig, resolve_preprocessing
from lit_transfer.data.resize import AntialiasedRandomResizedCrop, EvalResizeCrop

Preset = Literal["none", "light", "medium", "heavy"]
PRESETS: tuple[str, ...] = ("none", "light", "medium", "heavy")
"""Names accepted as ``train_transform``."""


def _eval_geometry(cfg: DataConfig) -> list[A.BasicTransform]:
    """Resize and center-crop as timm's ``create_transform(is_training=False)`` does (Pillow, antialiased)."""
    fill = [round(255 * m) for m in cfg.mean]  # timm pads `border` crops with the mean colour
    crop = EvalResizeCrop(cfg.size, cfg.crop_pct, cfg.crop_mode, cfg.interpolation, fill=fill)  # type: ignore[arg-type]
    return [crop]


def _preset_steps(name: str, cfg: DataConfig) -> list[A.BasicTransform | A.BaseCompose]:
    size = cfg.size
    interp = cfg.cv2_interpolation
    if name == "none":
        return _eval_geometry(cfg)
    if name == "light":
        return [
            AntialiasedRandomResizedCrop(size=size, scale=(0.6, 1.0), interpolation=interp),
            A.HorizontalFlip(p=0.5),
        ]
    if name == "medium":
        return [
            AntialiasedRandomResizedCrop(size=size, scale=(0.35, 1.0), interpolation=interp),
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-10, 10), translate_percent=(-0.05, 0.05), shear=(-5, 5), interpolation=interp, p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
        ]
    if name == "heavy":
        return [
            AntialiasedRandomResizedCrop(size=size, scale=(0.2, 1.0), interpolation=interp),
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-20, 20), translate_percent=(-0.1, 0.1), shear=(-10, 10), interpolation=interp, p=0.7),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8),
            A.ToGray(p=0.1 if cfg.in_chans == 3 else 0.0),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.5),
        ]
    raise ValueError(f"`train_transform` preset must be one of {list(PRESETS)} (or a pipeline), got {name!r}.")


def _is_preset_name(spec: Any) -> TypeGuard[str]:
    return isinstance(spec, str) and not spec.lower().endswith((".yaml", ".yml", ".json")) and "/" not in spec


def validate_train_transform(spec: PipelineSpec | None) -> None:
    """Fail fast on an unknown preset name or a missing pipeline file (called from DataModule ``__init__``)."""
    if spec is None:
        return
    if _is_preset_name(spec):
        if spec not in PRESETS:
            raise ValueError(
                f"`train_transform` must be one of {list(PRESETS)}, a YAML/JSON file path or a pipeline, got {spec!r}."
            )
        return
    # Build once: raises for missing files, bad class paths and a misplaced ToTensorV2.
    check_tail(load_pipeline(spec))


def build_train_transform(
    spec: PipelineSpec | None = "light",
    data_config: Mapping[str, Any] | DataConfig | None = None,
    image_size: int | None = None,
    in_chans: int = 3,
) -> A.Compose:
    """Build the training pipeline from a preset name or a user pipeline.

    Args:
        spec: A preset name (:data:`PRESETS`), a pipeline (see :mod:`lit_transfer.data.pipeline`) or ``None``
            (same as ``"none"``).
        data_config: timm data config (or a resolved :class:`DataConfig`); sizes and mean/std come from it.
        image_size: Square output size overriding the config's input size.
        in_chans: Channels the model expects (1 or 3).

    Returns:
        An ``A.Compose`` ending in ``Normalize`` → ``ToTensorV2``.

    Example:
        >>> import numpy as np
        >>> pipeline = build_train_transform("light", image_size=32)
        >>> out = pipeline(image=np.zeros((40, 50, 3), np.uint8))["image"]
        >>> tuple(out.shape), out.dtype
        ((3, 32, 32), torch.float32)
    """
    cfg = (
        data_config if isinstance(data_config, DataConfig) else resolve_preprocessing(data_config, image_size, in_chans)
    )
    steps = _preset_steps(spec or "none", cfg) if spec is None or _is_preset_name(spec) else load_pipeline(spec)
    return finalize_pipeline(steps, mean=cfg.mean, std=cfg.std)


def build_eval_transform(
    data_config: Mapping[str, Any] | DataConfig | None = None, image_size: int | None = None, in_chans: int = 3
) -> A.Compose:
    """Build the evaluation pipeline: timm's ``create_transform(**data_config, is_training=False)`` in Albumentations.

    Resize with Pillow's antialiased filter of the config's interpolation (``center``: the shorter side to
    ``floor(size / crop_pct)``; ``squash``: both sides; ``border``: the longer side, padded), center-crop ``size``,
    ``Normalize(mean, std)``, ``ToTensorV2``. For the same image and config the tensor equals timm's to float
    rounding.

    Args:
        data_config: timm data config (or a resolved :class:`DataConfig`); ``None`` uses timm's defaults.
        image_size: Square output size overriding the config's input size.
        in_chans: Channels the model expects (1 or 3).

    Returns:
        An ``A.Compose`` producing float32 CHW tensors.

    Example:
        >>> pipeline = build_eval_transform({"input_size": (3, 224, 224), "crop_pct": 0.875})
        >>> [type(t).__name__ for t in pipeline.transforms]
        ['EvalResizeCrop', 'Normalize', 'ToTensorV2']
    """
    cfg = (
        data_config if isinstance(data_config, DataConfig) else resolve_preprocessing(data_config, image_size, in_chans)
    )
    return finalize_pipeline(_eval_geometry(cfg), mean=cfg.mean, std=cfg.std)
