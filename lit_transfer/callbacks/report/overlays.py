"""Colours for class maps: the Pascal VOC palette, palette PNGs of class indices, and image-and-mask overlays.

A predicted or true mask is saved as a palette PNG (mode ``P``): its stored values are the class indices, which
any image library reads back as such (Pillow's ``np.asarray(Image.open(path))``, as Pascal VOC's masks are read),
and viewers show each class in its palette colour. Overlays blend those colours into the image.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["class_colours", "mask_image", "overlay", "save_png"]


def class_colours(count: int) -> np.ndarray:
    """``(count, 3)`` ``uint8`` colours of the Pascal VOC palette (class 0 black, then distinct colours).

    Example:
        >>> class_colours(3).tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


def mask_image(mask: np.ndarray) -> Image.Image:
    """A palette PNG image of class indices ``(H, W)`` (values up to 255; 255 shown white), VOC colours.

    Example:
        >>> image = mask_image(np.array([[0, 1], [2, 255]], np.uint8))
        >>> image.mode, np.asarray(image).tolist()
        ('P', [[0, 1], [2, 255]])
    """
    if mask.size and int(mask.max()) > 255:
        return Image.fromarray(mask.astype(np.uint16))  # more than 256 classes: a 16-bit PNG, no palette
    image = Image.fromarray(mask.astype(np.uint8), "P")
    palette = class_colours(256)
    palette[255] = (255, 255, 255)
    image.putpalette(palette.reshape(-1).tolist())
    return image


def overlay(image: np.ndarray, mask: np.ndarray, ignore_index: int = 255, alpha: float = 0.5) -> np.ndarray:
    """The image ``(H, W, C)`` ``uint8`` with each pixel's class colour blended in (``ignore_index`` left as is).

    Example:
        >>> overlay(np.full((1, 2, 3), 200, np.uint8), np.array([[1, 255]])).tolist()
        [[[164, 100, 100], [200, 200, 200]]]
    """
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(*image.shape[:2], 1), 3, 2)
    valid = mask != ignore_index
    indices = np.where(valid, mask, 0).astype(np.int64)
    colours = class_colours(int(indices.max()) + 1 if indices.size else 1)[indices]
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    out = np.where(valid[..., None], blended, rgb.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` as a PNG atomically (complete under its name, or not at all)."""
    from lit_transfer.files.atomic import atomic_path

    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
