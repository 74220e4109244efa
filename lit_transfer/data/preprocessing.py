"""The backbone's preprocessing settings (timm data config), resolved once.

A timm model publishes its input size, normalisation statistics, interpolation and crop fraction through
``timm.data.resolve_model_data_config(model)``. The DataModules take that dictionary as
``data_config``; missing keys fall back to timm's own defaults, never to numbers typed here.
:func:`resolve_preprocessing` merges it with an ``image_size`` override into a :class:`DataConfig` (timm's own
``timm.data.resolve_data_config`` reads a model's pretrained config instead: another function).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from timm.data import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from lit_transfer.errors import check_int

__all__ = [
    "INTERPOLATIONS",
    "MIN_IMAGE_SIZE",
    "DataConfig",
    "describe_preprocessing",
    "resolve_preprocessing",
    "same_preprocessing",
]

INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
    "random": cv2.INTER_LINEAR,  # timm's training-time choice; evaluation uses bilinear
}
"""timm interpolation names → OpenCV flags (for augmentations; every resize uses Pillow's filter of the name)."""

_KNOWN_KEYS = {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"}

MIN_IMAGE_SIZE = 8
"""Smallest accepted height and width, in pixels.

8 px is the native resolution of the scikit-learn digits (the smallest real images the package ships), and the
smallest size at which a typical stride-4 CNN stem (a stride-2 convolution, then a stride-2 pooling) still leaves a
2x2 map: at 4 px the stem already reduces the image to one pixel, everything after it sees no spatial structure,
and training-mode BatchNorm fails outright on a batch of one. A size below it is taken for a typo (``4`` for
``48``?), never trained on silently.
"""


@dataclass(frozen=True)
class DataConfig:
    """Resolved preprocessing settings.

    Attributes:
        in_chans: Channels the model expects (1 or 3).
        size: Output ``(height, width)``.
        mean: Per-channel mean in the 0-1 range, ``in_chans`` values.
        std: Per-channel standard deviation in the 0-1 range, ``in_chans`` values.
        interpolation: timm interpolation name (``"bilinear"``, ``"bicubic"``, ...).
        crop_pct: Evaluation crop fraction: resize to ``size / crop_pct``, then center-crop ``size``.
        crop_mode: ``"center"`` (resize the shorter side), ``"squash"`` (resize both sides) or ``"border"``
            (resize the longer side and pad), as timm's evaluation transform.
    """

    in_chans: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = DEFAULT_CROP_PCT
    crop_mode: str = "center"

    @property
    def cv2_interpolation(self) -> int:
        """The OpenCV flag for :attr:`interpolation`."""
        return INTERPOLATIONS[self.interpolation]

    @property
    def resize_size(self) -> tuple[int, int]:
        """Size before the evaluation center crop, ``floor(size / crop_pct)`` per side as in timm."""
        return (int(self.size[0] / self.crop_pct), int(self.size[1] / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        """This config as a timm-style dictionary of plain values (lists, floats, strings).

        The format of ``TransferClassifier.data_config`` and of the checkpoint's ``"data_config"`` entry;
        :func:`resolve_preprocessing` turns it back into an equal :class:`DataConfig`.

        Returns:
            ``{"input_size": [C, H, W], "mean": [...], "std": [...], "interpolation": str, "crop_pct": float,
            "crop_mode": str}``.

        Example:
            >>> cfg = resolve_preprocessing(None, image_size=32)
            >>> cfg.to_dict()["input_size"], resolve_preprocessing(cfg.to_dict()) == cfg
            ([3, 32, 32], True)
        """
        return {
            "input_size": [int(self.in_chans), int(self.size[0]), int(self.size[1])],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": str(self.interpolation),
            "crop_pct": float(self.crop_pct),
            "crop_mode": str(self.crop_mode),
        }


def _per_channel(values: Any, in_chans: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"`data_config[{name!r}]` has {len(values)} values {values}, but `in_chans` is {in_chans}.")


def resolve_preprocessing(
    data_config: Mapping[str, Any] | None = None, image_size: int | None = None, in_chans: int = 3
) -> DataConfig:
    """Merge a timm data config with an optional image-size override.

    Args:
        data_config: timm's dictionary (``input_size`` as ``(C, H, W)``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``, ``crop_mode``), e.g. from ``timm.data.resolve_model_data_config(model)``. Missing keys
            (or ``None``) use timm's defaults: ImageNet mean/std, 224 px, bicubic, ``DEFAULT_CROP_PCT``.
        image_size: Square output size overriding ``input_size`` (logged when it differs); at least
            :data:`MIN_IMAGE_SIZE`.
        in_chans: Channels the model expects (1 or 3); 3-value statistics are averaged for ``in_chans=1``.

    Returns:
        The resolved :class:`DataConfig`.

    Raises:
        ValueError: A value is out of range, e.g. an ``image_size`` below :data:`MIN_IMAGE_SIZE`; the message names
            the argument.

    Example:
        >>> cfg = resolve_preprocessing({"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3,
        ...                              "interpolation": "bicubic", "crop_pct": 0.9})
        >>> cfg.size, cfg.resize_size, cfg.mean
        ((224, 224), (248, 248), (0.5, 0.5, 0.5))
    """
    if in_chans not in (1, 3):
        raise ValueError(f"`in_chans` must be 1 or 3, got {in_chans!r}.")
    cfg = dict(data_config or {})
    unknown = set(cfg) - _KNOWN_KEYS
    if unknown:
        rank_zero_warn(f"`data_config` keys {sorted(unknown)} are ignored; known keys: {sorted(_KNOWN_KEYS)}.")
    input_size = cfg.get("input_size") or (in_chans, 224, 224)
    if len(input_size) != 3:
        raise ValueError(f"`data_config['input_size']` must be (C, H, W), got {input_size!r}.")
    size = (int(input_size[1]), int(input_size[2]))
    if image_size is not None:
        check_int("image_size", image_size, minimum=1, expected="a positive int or None")
        if (image_size, image_size) != size:
            rank_zero_info(f"Image size {image_size} overrides the backbone's input size {size[0]}x{size[1]}.")
        size = (image_size, image_size)
    if min(size) < MIN_IMAGE_SIZE:
        where = "`image_size`" if image_size is not None else "`data_config['input_size']`"
        raise ValueError(
            f"{where} gives {size[0]}x{size[1]} px images, below the {MIN_IMAGE_SIZE} px floor: a CNN stem reduces"
            " them to a single pixel and the model would train on no spatial structure. Set `image_size` to at least"
            f" {MIN_IMAGE_SIZE} (32-64 for small images such as the digits, the backbone's own size, e.g. 224, for"
            " photos), or `image_size=None` to use the backbone's input size."
        )
    interpolation = str(cfg.get("interpolation") or "bicubic")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"`data_config['interpolation']` must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}."
        )
    crop_pct = float(cfg.get("crop_pct") or DEFAULT_CROP_PCT)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"`data_config['crop_pct']` must be in (0, 1], got {crop_pct!r}.")
    crop_mode = str(cfg.get("crop_mode") or "center")
    if crop_mode not in ("center", "squash", "border"):
        raise ValueError(f"`data_config['crop_mode']` must be 'center', 'squash' or 'border', got {crop_mode!r}.")
    return DataConfig(
        in_chans=in_chans,
        size=size,
        mean=_per_channel(cfg.get("mean") or IMAGENET_DEFAULT_MEAN, in_chans, "mean"),
        std=_per_channel(cfg.get("std") or IMAGENET_DEFAULT_STD, in_chans, "std"),
        interpolation=interpolation,
        crop_pct=crop_pct,
        crop_mode=crop_mode,
    )


def same_preprocessing(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two timm-style data configs give the same input size and (within 1e-6) the same mean and std.

    Example:
        >>> same_preprocessing({"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        ...                    {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3})
        True
    """
    if [int(v) for v in a["input_size"]] != [int(v) for v in b["input_size"]]:
        return False
    for key in ("mean", "std"):
        x, y = list(a.get(key) or []), list(b.get(key) or [])
        if len(x) != len(y) or any(abs(float(u) - float(v)) > 1e-6 for u, v in zip(x, y)):
            return False
    return True


def describe_preprocessing(data_config: Mapping[str, Any]) -> str:
    """``"32x32 px, mean [...], std [...]"`` for messages.

    Example:
        >>> describe_preprocessing({"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3})
        '32x32 px, mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25]'
    """
    _, height, width = data_config["input_size"]
    mean = [round(float(v), 4) for v in data_config.get("mean") or []]
    std = [round(float(v), 4) for v in data_config.get("std") or []]
    return f"{height}x{width} px, mean {mean}, std {std}"
