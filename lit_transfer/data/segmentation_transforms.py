"""Albumentations pipelines for segmentation: the image and its mask transformed together.

Every geometric step moves the mask with the image, resampled with nearest-neighbour (Albumentations'
``mask_interpolation`` default), and fills the pixels it creates with ``ignore_index``, so no loss or metric counts
them. Evaluation and prediction **letterbox**: the longer side is resized to the input size (the aspect ratio kept),
and the image is padded at the bottom and right with the mean colour to the input size; :func:`letterbox_shape` says
which part holds the image, and :func:`restore_size` maps a prediction back to the image's own size.

Training presets (``train_transform``; a pipeline of Albumentations transforms is accepted too, as for the other
DataModules, completed with ``Normalize`` and ``ToTensorV2``):

- ``none``: the letterbox, no augmentation;
- ``light``: ``RandomResizedCrop(scale=(0.5, 1))`` + ``HorizontalFlip``;
- ``medium``: ``light`` + a small ``Affine`` + ``ColorJitter``;
- ``heavy``: ``RandomResizedCrop(scale=(0.25, 1))`` + flip + a stronger ``Affine`` + ``ColorJitter`` + blur or noise.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from lit_transfer.data.pipeline import PipelineSpec, finalize_pipeline, load_pipeline
from lit_transfer.data.preprocessing import DataConfig
from lit_transfer.data.transforms import PRESETS

__all__ = [
    "build_segmentation_eval_transform",
    "build_segmentation_train_transform",
    "letterbox_shape",
    "restore_size",
]


def letterbox_shape(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The ``(height, width)`` an image of ``height x width`` has inside the letterbox of ``size`` (top-left).

    The scale is Albumentations' ``LongestMaxSize(max_size_hw=size)``: the largest that fits both sides.

    Example:
        >>> letterbox_shape(300, 400, (32, 32)), letterbox_shape(1000, 7, (32, 32))
        ((24, 32), (32, 1))
    """
    scale = min(size[0] / height, size[1] / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def restore_size(prediction: np.ndarray, original: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A class map at the input ``size`` cropped to the letterboxed image and resized to ``original`` (nearest).

    Args:
        prediction: Class indices ``(H, W)`` at the input size.
        original: The image's own ``(height, width)``.
        size: The input size ``(H, W)``.

    Example:
        >>> restore_size(np.array([[1, 2], [255, 255]], np.uint8), (10, 20), (2, 2)).shape
        (10, 20)
    """
    height, width = letterbox_shape(original[0], original[1], size)
    crop = np.ascontiguousarray(prediction[:height, :width])
    return cv2.resize(crop, (original[1], original[0]), interpolation=cv2.INTER_NEAREST)


def _letterbox(cfg: DataConfig, ignore_index: int) -> list[A.BasicTransform]:
    fill = tuple(round(255 * m) for m in cfg.mean)
    return [
        A.LongestMaxSize(max_size=None, max_size_hw=cfg.size, interpolation=cfg.cv2_interpolation),
        A.PadIfNeeded(
            min_height=cfg.size[0],
            min_width=cfg.size[1],
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=fill if len(fill) > 1 else fill[0],
            fill_mask=ignore_index,
        ),
    ]


def _preset(name: str, cfg: DataConfig, ignore_index: int) -> list[Any]:
    size, interp = cfg.size, cfg.cv2_interpolation
    if name == "none":
        return _letterbox(cfg, ignore_index)
    affine = {"interpolation": interp, "border_mode": cv2.BORDER_CONSTANT, "fill_mask": ignore_index}
    if name == "light":
        return [A.RandomResizedCrop(size=size, scale=(0.5, 1.0), interpolation=interp), A.HorizontalFlip(p=0.5)]
    if name == "medium":
        return [
            A.RandomResizedCrop(size=size, scale=(0.5, 1.0), interpolation=interp),
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=0.5, **affine),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
        ]
    return [
        A.RandomResizedCrop(size=size, scale=(0.25, 1.0), interpolation=interp),
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-20, 20), translate_percent=(-0.1, 0.1), shear=(-10, 10), p=0.7, **affine),
        A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, p=0.8),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
    ]


def build_segmentation_train_transform(spec: PipelineSpec | None, cfg: DataConfig, ignore_index: int) -> A.Compose:
    """The training pipeline: a preset (see the module docstring) or a user pipeline, then ``Normalize``, tensors.

    Example:
        >>> from lit_transfer.data.preprocessing import resolve_preprocessing
        >>> pipeline = build_segmentation_train_transform("light", resolve_preprocessing(image_size=32), 255)
        >>> out = pipeline(image=np.zeros((40, 50, 3), np.uint8), mask=np.ones((40, 50), np.uint8))
        >>> tuple(out["image"].shape), tuple(out["mask"].shape), out["mask"].unique().tolist()
        ((3, 32, 32), (32, 32), [1])
    """
    if spec is None or (isinstance(spec, str) and spec in PRESETS):
        steps = _preset(spec or "none", cfg, ignore_index)
    else:
        steps = load_pipeline(spec)
    return finalize_pipeline(steps, mean=cfg.mean, std=cfg.std)


def build_segmentation_eval_transform(cfg: DataConfig, ignore_index: int) -> A.Compose:
    """The evaluation and prediction pipeline: the letterbox, ``Normalize``, tensors.

    Example:
        >>> from lit_transfer.data.preprocessing import resolve_preprocessing
        >>> pipeline = build_segmentation_eval_transform(resolve_preprocessing(image_size=32), 255)
        >>> out = pipeline(image=np.zeros((30, 60, 3), np.uint8), mask=np.zeros((30, 60), np.uint8))
        >>> out["mask"][:, 0].tolist() == [0] * 16 + [255] * 16  # 60x30 -> 32x16, padded below with `ignore`
        True
    """
    return finalize_pipeline(_letterbox(cfg, ignore_index), mean=cfg.mean, std=cfg.std)
