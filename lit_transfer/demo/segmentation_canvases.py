"""Digit canvases with masks: a real semantic-segmentation task from scikit-learn's bundled digits (no download).

The canvases of :mod:`lit_transfer.demo.canvases` (a 2x2 grid of ``cell``-pixel cells, 1-3 handwritten scans of
the digits 5-9 in random cells, the other cells black), each with a mask of the same size: every pixel of a digit's
strokes (upsampled scan value at least :data:`STROKE`) holds the class of that digit, every other pixel class 0
(``background``). ``classes.txt`` names the classes: ``background``, then the digits. Each split draws its scans
from its own pool (the fixed split of :class:`~lit_transfer.data.DigitsDataModule`), so no scan appears in two
splits. :func:`write_segmentation_canvases` writes the layout
:class:`~lit_transfer.data.SegmentationFolderDataModule` reads::

    python -m lit_transfer.demo.segmentation_canvases data/digit_masks --train 50

    data/digit_masks/classes.txt
    data/digit_masks/{train,val,test}/images/0000.png   (grayscale canvases)
    data/digit_masks/{train,val,test}/masks/0000.png    (class indices)
    data/digit_masks/predict/0000.png                   (canvases without masks)

    lit-transfer fit --config recipes/defaults.yaml --config recipes/segmentation.yaml

The same arguments write the same files.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lit_transfer.demo.canvases import CANVAS_DIGITS, _scan_pools

__all__ = ["STROKE", "write_segmentation_canvases"]

STROKE = 64
"""Smallest upsampled scan value (of 255) that counts as a digit's stroke in the mask."""


def _draw(scans: list[np.ndarray], classes: list[int], cells: list[int], cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``2*cell`` square canvas and its mask: each scan upsampled into its cell, its strokes labelled."""
    canvas = np.zeros((2 * cell, 2 * cell), dtype=np.uint8)
    mask = np.zeros_like(canvas)
    for scan, index, position in zip(scans, classes, cells):
        row, col = divmod(position, 2)
        area = (slice(row * cell, (row + 1) * cell), slice(col * cell, (col + 1) * cell))
        upsampled = cv2.resize(scan, (cell, cell), interpolation=cv2.INTER_LINEAR)
        canvas[area] = upsampled
        mask[area] = np.where(upsampled >= STROKE, index, 0)
    return canvas, mask


def write_segmentation_canvases(
    root: str | os.PathLike,
    train: int = 50,
    val: int = 50,
    test: int = 100,
    predict: int = 8,
    digits: Sequence[int] = CANVAS_DIGITS,
    max_digits: int = 3,
    cell: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val,test}/{images,masks}/``, ``root/predict/`` and ``root/classes.txt``; return ``root``.

    Args:
        root: Output folder (created).
        train: Training canvases (with masks).
        val: Validation canvases.
        test: Test canvases.
        predict: Canvases without masks in ``root/predict`` (drawn from the test scans).
        digits: The digits that appear (distinct values in 0-9); class ``i + 1`` is ``digits[i]``.
        max_digits: At most this many digits per canvas (1-4).
        cell: Size of a cell in pixels; the canvas is ``2 * cell`` square.
        seed: Seed of the draw: the same arguments write the same files.

    Returns:
        ``root``.

    Example:
        >>> import tempfile
        >>> root = write_segmentation_canvases(tempfile.mkdtemp(), train=4, val=2, test=2, predict=1, cell=16)
        >>> (root / "classes.txt").read_text().split()
        ['background', '5', '6', '7', '8', '9']
        >>> mask = np.asarray(Image.open(root / "train" / "masks" / "0000.png"))
        >>> mask.shape, set(np.unique(mask).tolist()) <= set(range(6))
        ((32, 32), True)
    """
    if not 1 <= max_digits <= 4:
        raise ValueError(f"`max_digits` must be between 1 and 4 (a canvas has 4 cells), got {max_digits!r}.")
    if not digits or len(set(digits)) != len(digits) or not set(digits) <= set(range(10)):
        raise ValueError(f"`digits` must be distinct digits in 0-9, got {list(digits)!r}.")
    images, labels, pools = _scan_pools(digits)
    index = {digit: i + 1 for i, digit in enumerate(digits)}
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train), ("val", val), ("test", test), ("predict", predict)):
        pool = pools["test" if split == "predict" else split]
        for i in range(count):
            shown = int(rng.integers(1, max_digits + 1))
            chosen = rng.choice(pool, size=shown, replace=False)
            cells = sorted(rng.choice(4, size=shown, replace=False).tolist())
            classes = [index[int(labels[j])] for j in chosen]
            canvas, mask = _draw([images[j] for j in chosen], classes, cells, cell)
            if split == "predict":
                (root / "predict").mkdir(parents=True, exist_ok=True)
                Image.fromarray(canvas).save(root / "predict" / f"{i:04d}.png")
                continue
            for kind, array in (("images", canvas), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(["background", *(str(d) for d in digits)]) + "\n")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lit_transfer.demo.segmentation_canvases ROOT [--train N] [--val N] [--test N] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--train", type=int, default=50, help="training canvases (default 50)")
    parser.add_argument("--val", type=int, default=50, help="validation canvases (default 50)")
    parser.add_argument("--test", type=int, default=100, help="test canvases (default 100)")
    parser.add_argument("--predict", type=int, default=8, help="canvases without masks in ROOT/predict (default 8)")
    parser.add_argument("--digits", type=int, nargs="+", default=list(CANVAS_DIGITS), help="digits shown (5-9)")
    parser.add_argument("--max-digits", type=int, default=3, help="at most this many digits per canvas (default 3)")
    parser.add_argument("--cell", type=int, default=32, help="cell size in px; canvases are twice as large")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    args = parser.parse_args(argv)
    root = write_segmentation_canvases(
        args.root, args.train, args.val, args.test, args.predict, args.digits, args.max_digits, args.cell, args.seed
    )
    print(f"Wrote {root} (train {args.train}, val {args.val}, test {args.test}, predict {args.predict})")


if __name__ == "__main__":
    main()
