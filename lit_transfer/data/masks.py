"""Segmentation masks: decoding to class indices, and the checks every mask passes before it trains.

A mask is an image file (PNG, usually) whose pixel values are class indices, ``ignore_index`` (255 by default) where
no class applies. Accepted modes:

* ``L`` (8-bit grayscale) and ``P`` (palette): the stored values are the indices (a palette PNG, as Pascal VOC's,
  keeps its indices; its colours are only for display);
* ``1`` (bilevel): 0 and 1;
* ``I;16`` and ``I`` (16- and 32-bit integers): the values as they are (up to 65535);
* ``RGB``/``RGBA`` whose three channels are equal at every pixel (a grayscale mask saved in colour), alpha opaque.

A colour mask (the class drawn as a colour) is refused with the way to convert it: indices are what a segmentation
model learns, and a colour-to-class table cannot be guessed. :func:`mask_problem` checks a mask against its image:
decodable, the image's size (after the image's EXIF rotation, as the image is decoded), values in range.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "COLOUR_HINT",
    "MaskError",
    "MaskFacts",
    "image_size",
    "load_mask",
    "mask_facts",
    "mask_problem",
    "scan_masks",
]

_INDEX_MODES = {"L", "P", "1", "I;16", "I;16B", "I;16L", "I;16N", "I"}
COLOUR_HINT = (
    "Masks hold one class index per pixel (mode L or P: 0, 1, 2, ...; 255 = ignore). To convert colour masks, map"
    " each colour to its index, e.g. with NumPy: `index = np.full(rgb.shape[:2], 255, np.uint8); for i, colour in"
    " enumerate(palette): index[(rgb == colour).all(-1)] = i; Image.fromarray(index).save(path)`; or save a palette"
    " PNG (`Image.fromarray(index, 'P')` with `putpalette`), whose stored values are the indices."
)


class MaskError(ValueError):
    """A mask is missing, cannot be decoded, is in colour, has another size than its image, or holds bad values."""


class _Unreadable(Exception):
    """Why a mask gives no class indices (``colour``: it holds colours, and the conversion hint applies)."""

    def __init__(self, reason: str, colour: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.colour = reason, colour


def _indices(path: str) -> np.ndarray:
    """The mask's values, or :class:`_Unreadable`."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.asarray(img)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise _Unreadable(f"cannot be decoded: {type(err).__name__}: {err}") from err
    if mode in _INDEX_MODES:
        values = array.astype(np.int64)
    elif mode in ("RGB", "RGBA", "RGBX") and array.ndim == 3:
        opaque = mode != "RGBA" or bool((array[..., 3] == 255).all())
        grey = bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())
        if not (grey and opaque):
            colours = len(np.unique(array[..., :3].reshape(-1, 3), axis=0))
            raise _Unreadable(f"is a colour image ({mode}, {colours} distinct colours), not class indices", True)
        values = array[..., 0].astype(np.int64)
    else:
        raise _Unreadable(f"has the image mode {mode!r}, which holds no class indices", True)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise _Unreadable("holds values outside 0..65535; class indices are small non-negative integers")
    return values


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask file to class indices ``(H, W)``: ``uint8``, or ``uint16`` for values above 255.

    Raises:
        MaskError: The file cannot be decoded, or holds colours instead of indices (with how to convert them).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
        >>> Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8)).save(path)
        >>> load_mask(path).tolist()
        [[0, 1], [2, 255]]
    """
    path = os.fspath(path)
    try:
        values = _indices(path)
    except _Unreadable as err:
        raise MaskError(f"Mask {path!r} {err.reason}." + (f" {COLOUR_HINT}" if err.colour else "")) from None
    dtype = np.uint8 if not values.size or values.max() <= 255 else np.uint16
    return np.ascontiguousarray(values.astype(dtype))


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` of an image as it is decoded (EXIF rotation applied), from its header.

    ``None`` when the header cannot be read (the image scan reports the file).
    """
    try:
        with Image.open(os.fspath(path)) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


@dataclass(frozen=True)
class MaskFacts:
    """What a scan learnt about a mask: its size and distinct values, or its ``problem`` (``colour``: in colour)."""

    size: tuple[int, int] | None
    values: tuple[int, ...]
    problem: str | None = None
    colour: bool = False


def mask_facts(path: str | os.PathLike) -> MaskFacts:
    """The mask's size and distinct values, or the reason it cannot be read."""
    try:
        mask = _indices(os.fspath(path))
    except _Unreadable as err:
        return MaskFacts(None, (), err.reason, err.colour)
    return MaskFacts((int(mask.shape[0]), int(mask.shape[1])), tuple(int(v) for v in np.unique(mask)))


def mask_problem(facts: MaskFacts, size: tuple[int, int] | None, num_classes: int, ignore_index: int) -> str | None:
    """Why a mask does not fit its image and the classes, or ``None``.

    Args:
        facts: The mask's :func:`mask_facts`.
        size: Its image's ``(height, width)`` (``None``: unknown, not compared).
        num_classes: Valid indices are ``0 .. num_classes - 1``.
        ignore_index: The value of ignored pixels, also valid.

    Example:
        >>> mask_problem(MaskFacts((4, 6), (0, 3, 255)), (4, 6), num_classes=3, ignore_index=255)
        'class index 3 out of range (0..2, or 255 = ignore)'
    """
    if facts.problem is not None:
        return facts.problem
    if size is not None and facts.size != size:
        assert facts.size is not None
        return (
            f"{facts.size[1]}x{facts.size[0]} px, but its image is {size[1]}x{size[0]} px (width x height); a mask must"
            " cover its image pixel for pixel"
        )
    wrong = [v for v in facts.values if v != ignore_index and v >= num_classes]
    if wrong:
        shown = ", ".join(map(str, wrong[:5]))
        return (
            f"class index {shown} out of range (0..{num_classes - 1}, or {ignore_index} = ignore)"
            if len(wrong) == 1
            else f"class indices {shown} out of range (0..{num_classes - 1}, or {ignore_index} = ignore)"
        )
    return None


def scan_masks(paths: Iterable[str], num_threads: int | None = None) -> dict[str, MaskFacts]:
    """:func:`mask_facts` of many masks, in parallel threads (Pillow releases the GIL while decoding)."""
    files = list(paths)
    threads = num_threads or min(8, os.cpu_count() or 1)
    if threads <= 1 or len(files) < 64:
        return {p: mask_facts(p) for p in files}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(files, pool.map(mask_facts, files, chunksize=32)))
