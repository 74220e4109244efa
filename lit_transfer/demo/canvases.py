"""Digit canvases: a real multi-label and regression task made from scikit-learn's bundled digits (no download).

A canvas is a 2x2 grid of ``cell``-pixel cells (64x64 px by default) holding 1-3 handwritten digit scans in random
cells, the other cells black. Its labels are the digits it shows (multi-label), and its numbers are how many
digits it shows (``count``) and their ``sum`` (regression). Each split draws its scans from its own pool, the
digits' fixed test / validation / training scans (the split of :class:`~lit_transfer.data.DigitsDataModule`), so
no scan appears in two splits.

:func:`write_canvases` writes PNG files and one CSV per split, which :class:`~lit_transfer.data.CSVDataModule` reads::

    python -m lit_transfer.demo.canvases data/canvases --train 300

    lit-transfer fit --config recipes/defaults.yaml --config recipes/multilabel.yaml
    lit-transfer fit --config recipes/defaults.yaml --config recipes/regression.yaml

The CSVs have the columns ``path``, ``digits`` (the distinct digits shown, ascending, joined by ``|``), ``count``
and ``sum``. The same arguments write the same files.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lit_transfer.data.digits import digit_arrays
from lit_transfer.data.splits import stratified_split

__all__ = ["CANVAS_DIGITS", "write_canvases"]

CANVAS_DIGITS: tuple[int, ...] = (5, 6, 7, 8, 9)
"""The digits on the canvases by default: those the quick start's source model (trained on 0-4) never saw."""

_SPLIT_SEED = 0  # the digits' fixed split (DigitsDataModule's default `split_seed`)


def _scan_pools(digits: Sequence[int]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The scans and their digits, and each split's scan indices (only of ``digits``)."""
    images, labels = digit_arrays()
    rest, test = stratified_split(labels, 0.25, _SPLIT_SEED)
    rest_train, rest_val = stratified_split(labels[rest], 0.2, _SPLIT_SEED)
    pools = {"train": [rest[i] for i in rest_train], "val": [rest[i] for i in rest_val], "test": test}
    wanted = set(digits)
    return images, labels, {k: np.array([i for i in v if labels[i] in wanted]) for k, v in pools.items()}


def _canvas(scans: list[np.ndarray], cells: list[int], cell: int) -> np.ndarray:
    """A ``2*cell`` square ``uint8`` canvas with each scan upsampled into its cell (0-3, row by row)."""
    canvas = np.zeros((2 * cell, 2 * cell), dtype=np.uint8)
    for scan, position in zip(scans, cells):
        row, col = divmod(position, 2)
        canvas[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = cv2.resize(
            scan, (cell, cell), interpolation=cv2.INTER_LINEAR
        )
    return canvas


def write_canvases(
    root: str | os.PathLike,
    train: int = 300,
    val: int = 100,
    test: int = 200,
    digits: Sequence[int] = CANVAS_DIGITS,
    max_digits: int = 3,
    cell: int = 32,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``root/<split>/<i>.png`` canvases and ``root/<split>.csv`` for the train, val and test splits.

    Args:
        root: Output folder (created).
        train: Training canvases.
        val: Validation canvases.
        test: Test canvases.
        digits: The digits that appear (distinct values in 0-9).
        max_digits: At most this many digits per canvas (1-4); each canvas shows 1 to ``max_digits``.
        cell: Size of a cell in pixels; the canvas is ``2 * cell`` square.
        seed: Seed of the draw: the same arguments write the same files.

    Returns:
        ``{"train": <train.csv>, "val": ..., "test": ...}``.

    Example:
        >>> import tempfile, csv
        >>> tables = write_canvases(tempfile.mkdtemp(), train=4, val=2, test=2, cell=16)
        >>> rows = list(csv.DictReader(open(tables["train"])))
        >>> list(rows[0]), len(rows)
        (['path', 'digits', 'count', 'sum'], 4)
    """
    if not 1 <= max_digits <= 4:
        raise ValueError(f"`max_digits` must be between 1 and 4 (a canvas has 4 cells), got {max_digits!r}.")
    if not digits or len(set(digits)) != len(digits) or not set(digits) <= set(range(10)):
        raise ValueError(f"`digits` must be distinct digits in 0-9, got {list(digits)!r}.")
    images, labels, pools = _scan_pools(digits)
    rng = np.random.default_rng(seed)
    root = Path(root)
    tables: dict[str, Path] = {}
    for split, count in (("train", train), ("val", val), ("test", test)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            shown = int(rng.integers(1, max_digits + 1))
            chosen = rng.choice(pools[split], size=shown, replace=False)
            cells = sorted(rng.choice(4, size=shown, replace=False).tolist())
            Image.fromarray(_canvas([images[j] for j in chosen], cells, cell)).save(folder / f"{i:04d}.png")
            values = [int(labels[j]) for j in chosen]
            present = "|".join(str(d) for d in sorted(set(values)))
            rows.append([f"{split}/{i:04d}.png", present, shown, sum(values)])
        tables[split] = root / f"{split}.csv"
        with tables[split].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "digits", "count", "sum"])
            writer.writerows(rows)
    return tables


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lit_transfer.demo.canvases ROOT [--train N] [--val N] [--test N] [--seed S] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("root", help="output folder")
    parser.add_argument("--train", type=int, default=300, help="training canvases (default 300)")
    parser.add_argument("--val", type=int, default=100, help="validation canvases (default 100)")
    parser.add_argument("--test", type=int, default=200, help="test canvases (default 200)")
    parser.add_argument("--digits", type=int, nargs="+", default=list(CANVAS_DIGITS), help="digits shown (5-9)")
    parser.add_argument("--max-digits", type=int, default=3, help="at most this many digits per canvas (default 3)")
    parser.add_argument("--cell", type=int, default=32, help="cell size in px; canvases are twice as large")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    args = parser.parse_args(argv)
    tables = write_canvases(
        args.root, args.train, args.val, args.test, args.digits, args.max_digits, args.cell, args.seed
    )
    print("Wrote " + ", ".join(f"{path} ({split})" for split, path in tables.items()))


if __name__ == "__main__":
    main()
