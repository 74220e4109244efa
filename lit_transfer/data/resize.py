"""Antialiased resizing as timm does it, as Albumentations transforms.

timm's evaluation transform resizes with Pillow, whose downscaling filters widen with the scale factor
(antialiasing); OpenCV's ``INTER_LINEAR``/``INTER_CUBIC`` do not, so a 4000x3000 photo or a fine pattern resized to
224 px with them aliases into patterns a pretrained model never saw. ``INTER_AREA`` (Albumentations'
``area_for_downscale``) antialiases with a box filter, which is closer but still not timm's bicubic or bilinear
filter. These transforms resize with Pillow itself:

* :class:`EvalResizeCrop` is the geometry of timm's ``create_transform(is_training=False)``: the resize (``center``:
  shorter side to ``floor(size / crop_pct)``; ``squash``: both sides; ``border``: longer side, then padded with the
  mean colour), the sizes torchvision computes, and torchvision's center crop. With the same data config its output
  equals timm's to float rounding (``tests/data/test_data_transforms.py`` measures it).
* :class:`AntialiasedRandomResizedCrop` is Albumentations' ``RandomResizedCrop`` (same crop sampling) with the crop
  resized by Pillow, so training images are filtered like evaluation images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
from PIL import Image

__all__ = ["PIL_FILTERS", "AntialiasedRandomResizedCrop", "EvalResizeCrop", "pil_resize"]

PIL_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "area": Image.Resampling.BOX,
    "random": Image.Resampling.BILINEAR,  # timm's training-time choice; a fixed filter here
}
"""timm interpolation names -> Pillow filters."""

_CV2_NAMES = {
    cv2.INTER_NEAREST: "nearest",
    cv2.INTER_NEAREST_EXACT: "nearest",
    cv2.INTER_LINEAR: "bilinear",
    cv2.INTER_LINEAR_EXACT: "bilinear",
    cv2.INTER_CUBIC: "bicubic",
    cv2.INTER_AREA: "box",
    cv2.INTER_LANCZOS4: "lanczos",
}

CropMode = Literal["center", "squash", "border"]


def pil_resize(image: np.ndarray, size: Sequence[int], interpolation: str = "bicubic") -> np.ndarray:
    """Resize an HWC (or HW) array to ``size = (height, width)`` with Pillow's antialiased filters.

    ``uint8`` images with 1 or 3 channels are resized as Pillow ``L``/``RGB`` images, exactly as timm's transforms
    do; other dtypes and channel counts channel by channel as 32-bit float images (no alpha premultiplication),
    rounded back to an integer dtype.

    Args:
        image: The array.
        size: ``(height, width)`` of the result.
        interpolation: A name of :data:`PIL_FILTERS`.

    Returns:
        The resized array, same dtype and channel count.

    Example:
        >>> out = pil_resize(np.zeros((300, 400, 3), np.uint8), (30, 40))
        >>> out.shape, out.dtype
        ((30, 40, 3), dtype('uint8'))
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    resample = PIL_FILTERS[interpolation]
    single = image.ndim == 3 and image.shape[2] == 1
    if image.dtype == np.uint8 and (image.ndim == 2 or single or image.shape[2] == 3):
        resized = np.asarray(Image.fromarray(image[..., 0] if single else image).resize((width, height), resample))
        return resized[..., None] if single else resized
    planes = image[..., None] if image.ndim == 2 else image
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32)).resize((width, height), resample)
        )
        for c in range(planes.shape[2])
    ]
    out = np.stack(channels, axis=-1)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(image.dtype)
    return out[..., 0] if image.ndim == 2 else out


def _crop_or_pad(image: np.ndarray, size: tuple[int, int], fill: float | Sequence[float]) -> np.ndarray:
    """Pad with ``fill`` to at least ``size``, then center-crop, as torchvision's ``center_crop`` does."""
    crop_h, crop_w = size
    height, width = image.shape[:2]
    if crop_w > width or crop_h > height:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        ltrb = (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2)
        value = fill if isinstance(fill, (int, float)) else list(fill)[: (image.shape[2] if image.ndim == 3 else 1)]
        padded = cv2.copyMakeBorder(image, ltrb[1], ltrb[3], ltrb[0], ltrb[2], cv2.BORDER_CONSTANT, value=value)
        image = padded.reshape(*padded.shape[:2], *image.shape[2:])
        height, width = image.shape[:2]
    top, left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)  # Python's round, as torchvision
    return np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])


class EvalResizeCrop(A.DualTransform):
    """timm's evaluation geometry: an antialiased resize (Pillow) by ``crop_pct``, then a center crop to ``size``.

    Args:
        size: Output ``(height, width)``.
        crop_pct: The crop fraction: the resize targets ``floor(size / crop_pct)`` per side.
        crop_mode: ``"center"``: the shorter side to the target (aspect ratio kept), then a center crop;
            ``"squash"``: both sides to the target, then a center crop; ``"border"``: the longer side to the
            target, then padded with ``fill`` and center-cropped (nothing of the image is lost at ``crop_pct=1``).
        interpolation: A name of :data:`PIL_FILTERS` (timm's data config's ``interpolation``).
        fill: Padding value(s) for ``border`` (timm uses the mean colour, ``round(255 * mean)``).
        p: Probability of applying the transform.

    Example:
        >>> crop = EvalResizeCrop((224, 224), crop_pct=0.875)
        >>> crop(image=np.zeros((3000, 4000, 3), np.uint8))["image"].shape
        (224, 224, 3)
    """

    def __init__(
        self,
        size: Sequence[int],
        crop_pct: float = 0.875,
        crop_mode: CropMode = "center",
        interpolation: str = "bicubic",
        fill: float | Sequence[float] = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if len(size) != 2 or min(int(v) for v in size) < 1:
            raise ValueError(f"`size` must be (height, width) of positive ints, got {size!r}.")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"`crop_pct` must be in (0, 1], got {crop_pct!r}.")
        if crop_mode not in ("center", "squash", "border"):
            raise ValueError(f"`crop_mode` must be 'center', 'squash' or 'border', got {crop_mode!r}.")
        if interpolation not in PIL_FILTERS:
            raise ValueError(f"`interpolation` must be one of {sorted(PIL_FILTERS)}, got {interpolation!r}.")
        self.size = (int(size[0]), int(size[1]))
        self.crop_pct = float(crop_pct)
        self.crop_mode = crop_mode
        self.interpolation = interpolation
        self.fill = fill

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` an image of that shape is resized to, as timm and torchvision compute it."""
        target = (math.floor(self.size[0] / self.crop_pct), math.floor(self.size[1] / self.crop_pct))
        if self.crop_mode == "squash":
            return target
        if self.crop_mode == "center" and target[0] == target[1]:  # torchvision's Resize(int): the shorter side
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = target[0], int(target[0] * long / short)
            return (new_long, new_short) if width <= height else (new_short, new_long)
        ratios = (height / target[0], width / target[1])  # timm's ResizeKeepRatio
        ratio = max(ratios) if self.crop_mode == "border" else min(ratios)
        return round(height / ratio), round(width / ratio)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The resized shape for the input's shape."""
        height, width = params["shape"][:2]
        return {"resized": self.resized_shape(height, width)}

    def apply(self, img: np.ndarray, resized: tuple[int, int], **params: Any) -> np.ndarray:
        """Resize ``img`` with Pillow, then pad (``border``) and center-crop it."""
        return _crop_or_pad(pil_resize(img, resized, self.interpolation), self.size, self.fill)

    def apply_to_mask(self, mask: np.ndarray, resized: tuple[int, int], **params: Any) -> np.ndarray:
        """The same geometry for a mask, resized with nearest-neighbour and padded with 0."""
        return _crop_or_pad(pil_resize(mask, resized, "nearest"), self.size, 0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """The arguments ``repr`` and ``A.to_dict`` record."""
        return ("size", "crop_pct", "crop_mode", "interpolation", "fill")


class AntialiasedRandomResizedCrop(A.RandomResizedCrop):
    """Albumentations' ``RandomResizedCrop`` whose crop is resized by Pillow (antialiased), not OpenCV.

    Same arguments and the same crop sampling; ``interpolation`` (an OpenCV flag) picks the Pillow filter of the
    same name (``INTER_AREA`` -> box). Masks keep Albumentations' own resize.

    Example:
        >>> crop = AntialiasedRandomResizedCrop(size=(32, 32), scale=(0.6, 1.0), interpolation=cv2.INTER_CUBIC)
        >>> crop(image=np.zeros((300, 400, 3), np.uint8))["image"].shape
        (32, 32, 3)
    """

    def apply(self, img: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        """Crop ``img`` to ``crop_coords`` and resize the crop with Pillow."""
        x_min, y_min, x_max, y_max = crop_coords
        return pil_resize(img[y_min:y_max, x_min:x_max], self.size, _CV2_NAMES.get(self.interpolation, "bilinear"))
