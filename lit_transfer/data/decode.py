"""Image decoding to the model's channel count, and the bad-file scan.

Every image reaches the transforms as a ``uint8`` HWC NumPy array with exactly ``in_chans`` channels.
Decoding uses Pillow, never ``cv2.imread`` (which returns ``None`` for unreadable files and a
grey-filled image for truncated JPEGs).

Mode handling:

- ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` → converted by Pillow.
- ``L`` and ``1`` (grayscale, bilevel) → replicated to 3 channels for ``in_chans=3``.
- ``RGBA``, ``LA``, ``PA`` and palette images with transparency → **composited on white**, so transparent
  backgrounds look like paper rather than whatever colour the hidden pixels hold.
- ``P`` (palette) → expanded through the palette.
- ``I;16`` / ``I;16B`` / ``I;16L`` / ``I`` (16-bit grayscale) → scaled from the full 16-bit range
  (``value / 257``) to 8 bits, so ``Normalize(max_pixel_value=255)`` stays correct.
- Anything else (e.g. ``F`` floating point) → :class:`BadImageError` naming the file.

EXIF orientation is applied (``ImageOps.exif_transpose``) so phone photos are upright.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""File extensions (lower case) treated as images when listing folders."""

_DIRECT_MODES = {"RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "L", "1"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class BadImageError(ValueError):
    """One or more image files cannot be decoded (empty, truncated, not an image, unsupported mode)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of the :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return os.fspath(path).lower().endswith(IMG_EXTENSIONS)


def _to_uint8_mode(img: Image.Image, path: str, in_chans: int) -> Image.Image:
    """Convert a decoded Pillow image to ``RGB`` (``in_chans=3``) or ``L`` (``in_chans=1``)."""
    target = "RGB" if in_chans == 3 else "L"
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(target)
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img, dtype=np.int64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert(target)
    if mode in _DIRECT_MODES:
        return img.convert(target) if mode != target else img
    raise BadImageError(
        f"Unsupported image mode {mode!r} in {path!r}; convert the file to 8-bit RGB, grayscale or RGBA "
        "(e.g. with Pillow's `Image.convert`)."
    )


def load_image(path: str | os.PathLike, in_chans: int = 3) -> np.ndarray:
    """Decode an image file to a ``uint8`` HWC array with exactly ``in_chans`` channels.

    Args:
        path: Image file.
        in_chans: ``3`` for RGB output, ``1`` for grayscale.

    Returns:
        Array of shape ``(H, W, in_chans)`` and dtype ``uint8``.

    Raises:
        BadImageError: The file is empty, truncated, not an image or in an unsupported mode; the message names
            the file.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
        >>> Image.new("L", (5, 4), 128).save(path)
        >>> load_image(path, in_chans=3).shape
        (4, 5, 3)
    """
    if in_chans not in (1, 3):
        raise ValueError(f"`in_chans` must be 1 or 3, got {in_chans!r}.")
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()
            image: Image.Image = ImageOps.exif_transpose(img) or img
            image = _to_uint8_mode(image, path, in_chans)
            array = np.asarray(image, dtype=np.uint8)
    except BadImageError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise BadImageError(f"Cannot decode image {path!r}: {type(err).__name__}: {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def check_image(path: str | os.PathLike) -> str | None:
    """Fast validity check of one file: ``None`` when it decodes, else the reason.

    Runs Pillow's ``verify()`` (structure, PNG checksums) and then a full decode to catch truncation; JPEGs are
    decoded in draft mode at reduced scale, which still reads the whole entropy-coded stream.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
            mode = img.mode
        if mode not in _DIRECT_MODES | _ALPHA_MODES | _SIXTEEN_BIT_MODES | {"P"}:
            return f"unsupported image mode {mode!r}"
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def scan_images(paths: Iterable[str | os.PathLike], num_threads: int | None = None) -> dict[str, str]:
    """Check many files in parallel threads (Pillow releases the GIL while decoding).

    Args:
        paths: Files to check.
        num_threads: Worker threads; default ``min(8, os.cpu_count())``.

    Returns:
        ``{path: reason}`` for every bad file, in input order; empty when all files decode.
    """
    files: list[str] = [os.fspath(p) for p in paths]
    if not files:
        return {}
    threads = num_threads or min(8, os.cpu_count() or 1)
    if threads <= 1 or len(files) < 64:
        reasons = [check_image(p) for p in files]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            reasons = list(pool.map(check_image, files, chunksize=32))
    return {p: r for p, r in zip(files, reasons) if r is not None}


def format_bad_files(bad: dict[str, str], limit: int = 50) -> str:
    """One line per bad file (``path: reason``), at most ``limit`` lines plus a count of the rest."""
    lines = [f"  {path}: {reason}" for path, reason in list(bad.items())[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


def unique_sorted(values: Sequence[str]) -> list[str]:
    """Sorted distinct labels; numerically when every label is an integer (``"2" < "10"``)."""
    distinct = set(values)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)
