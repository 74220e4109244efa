"""The held-out tasks of the ``heldout`` benchmark: new shifts and new architectures, kept apart from ``shift``.

Every task is built like the development tasks of :mod:`benchmarks.shift_tasks` (a source model trained here from
the digits by the quick start's source recipe, then a few-shot target task at 32x32 px), with shifts and
backbones the development suite does not use:

- **input-level shifts** (the source model is trained on all ten clean digits; the target is the same ten digits
  with a fixed corruption of every scan, :class:`CorruptedDigits`): rotated by 90 degrees, blurred, and low
  contrast with Gaussian noise;
- **output-level shifts** (new labels on clean scans): digits 0-6 -> 7-9, and even digits -> odd digits;
- **three backbone families**: a ResNet (``resnet14t``), a MobileNet (``mobilenetv3_small_100``) and a ConvNeXt
  (``convnext_atto``), none of them the development suite's ``resnet10t``.

:class:`HeldoutTask` and :class:`CorruptedDigits` also build the second, third and fourth held-out suites
(:mod:`benchmarks.heldout_b_tasks`, :mod:`benchmarks.heldout_c_tasks`,
:mod:`benchmarks.heldout_d_tasks`) and the LR finder's fifth (:mod:`benchmarks.heldout_e_tasks`), whose input
corruptions (``mirror``, ``dilate``; ``pixelate``, ``blot``; ``flip``, ``outline``; ``binarize``, ``shift``) are listed
here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.shift_tasks import IMAGE_SIZE, InvertedDigits, ShiftTask, fine_tune
from lit_transfer.data import DigitsDataModule

CORRUPTIONS = ("rot90", "blur", "noise", "mirror", "dilate", "pixelate", "blot", "flip", "outline", "binarize", "shift")
"""The input corruptions of :class:`CorruptedDigits` (the first held-out suite uses the first three, the second
``mirror`` and ``dilate``, the third ``pixelate`` and ``blot``, the fourth ``flip`` and ``outline``, the fifth
(the LR finder's) ``binarize`` and ``shift``)."""
NOISE_SEED = 1234
"""Seed of the fixed noise of ``noise`` (one draw over all 1,797 scans, the same for every split and run seed)."""
CONTRAST, NOISE_STD = 0.35, 24.0
"""``noise``: intensities scaled by ``CONTRAST`` around mid-grey, plus Gaussian noise of this std (0-255 scale)."""
BLUR_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
"""``blur``: a 3x3 binomial (Gaussian-like) kernel on the 8x8 scans, applied twice."""
PLUS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
"""``dilate`` and ``outline``: the offsets of the plus-shaped 3x3 structuring element (a pixel and its four
neighbours)."""
PIXEL_BLOCK = 2
"""``pixelate``: every ``PIXEL_BLOCK`` x ``PIXEL_BLOCK`` block of a scan takes its mean (8x8 scans at 4x4)."""
BINARY_THRESHOLD = 96
"""``binarize``: scans at two levels, 255 where the intensity (0-255) is at least this, 0 elsewhere."""
SHIFT_PIXELS = 2
"""``shift``: every scan moved this many pixels to the right, the columns it leaves black (its right edge cut)."""
BLOT_SEED, BLOT_SIZE = 4321, 3
"""``blot``: a ``BLOT_SIZE`` x ``BLOT_SIZE`` square at full intensity (255) on every scan, its top-left corner drawn
uniformly inside the scan by one draw of this seed over all 1,797 scans (the same for every split and run seed)."""


def corrupt(images: np.ndarray, corruption: str) -> np.ndarray:
    """Apply one deterministic corruption to ``uint8`` scans ``(N, 8, 8)``; same shape and dtype out.

    Args:
        images: All scans (the corruption of a scan depends on its index alone, never on the split or run seed).
        corruption: One of :data:`CORRUPTIONS`.

    Returns:
        The corrupted scans.
    """
    if corruption == "rot90":
        return np.ascontiguousarray(np.rot90(images, k=1, axes=(1, 2)))
    if corruption == "mirror":  # left-right
        return np.ascontiguousarray(images[:, :, ::-1])
    if corruption == "flip":  # upside down
        return np.ascontiguousarray(images[:, ::-1, :])
    if corruption == "shift":  # moved right, black from the left edge
        moved = np.zeros_like(images)
        moved[:, :, SHIFT_PIXELS:] = images[:, :, :-SHIFT_PIXELS]
        return moved
    if corruption == "binarize":  # two levels: full intensity from the threshold up, black below
        return np.where(images >= BINARY_THRESHOLD, np.uint8(255), np.uint8(0)).astype(np.uint8)
    if corruption in ("dilate", "outline"):
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="constant")
        height, width = images.shape[1:]
        shifted = [padded[:, 1 + i : 1 + i + height, 1 + j : 1 + j + width] for i, j in PLUS]
        dilated = np.maximum.reduce(shifted)  # every pixel takes the brightest of itself and its 4 neighbours
        if corruption == "dilate":  # grey-level dilation: thicker strokes
            return dilated
        # the morphological gradient (dilation minus erosion): the strokes' edges bright, their insides dark
        return (dilated - np.minimum.reduce(shifted)).astype(np.uint8)
    if corruption == "blot":  # an ink blot: a square of full intensity, at a fixed place per scan
        count, height, width = images.shape
        highs = [height - BLOT_SIZE + 1, width - BLOT_SIZE + 1]  # the whole square inside the scan
        corners = np.random.default_rng(BLOT_SEED).integers(0, highs, size=(count, 2))
        rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
        top, left = corners[:, 0, None, None], corners[:, 1, None, None]
        inside = (rows >= top) & (rows < top + BLOT_SIZE) & (cols >= left) & (cols < left + BLOT_SIZE)
        return np.where(inside, np.uint8(255), images).astype(np.uint8)
    values = images.astype(np.float64)
    if corruption == "pixelate":  # coarser sampling: the mean of each block, repeated over the block
        count, height, width = images.shape
        block = PIXEL_BLOCK
        means = values.reshape(count, height // block, block, width // block, block).mean(axis=(2, 4))
        values = np.repeat(np.repeat(means, block, axis=1), block, axis=2)
    elif corruption == "blur":
        for _ in range(2):
            padded = np.pad(values, ((0, 0), (1, 1), (1, 1)), mode="constant")
            values = sum(
                BLUR_KERNEL[i, j] * padded[:, i : i + values.shape[1], j : j + values.shape[2]]
                for i in range(3)
                for j in range(3)
            )
    elif corruption == "noise":
        noise = np.random.default_rng(NOISE_SEED).normal(0.0, NOISE_STD, size=values.shape)
        values = 127.5 + CONTRAST * (values - 127.5) + noise
    else:
        raise ValueError(f"`corruption` must be one of {CORRUPTIONS}, got {corruption!r}.")
    return np.rint(values).clip(0, 255).astype(np.uint8)


class CorruptedDigits(DigitsDataModule):
    """:class:`~lit_transfer.data.DigitsDataModule` with one fixed corruption of every scan of every split.

    Like :class:`~benchmarks.shift_tasks.InvertedDigits`: deterministic (the same for train, validation and test
    scans), with the splits, labels and few-shot draws of the clean module with the same arguments.

    Args:
        corruption: One of :data:`CORRUPTIONS` (see :func:`corrupt`).
        **kwargs: The arguments of :class:`~lit_transfer.data.DigitsDataModule`.
    """

    def __init__(self, corruption: str, **kwargs: Any) -> None:
        if corruption not in CORRUPTIONS:
            raise ValueError(f"`corruption` must be one of {CORRUPTIONS}, got {corruption!r}.")
        super().__init__(**kwargs)
        self.corruption = corruption

    def _splits(self) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
        images, digits, splits = super()._splits()
        return corrupt(images, self.corruption), digits, splits


@dataclass(frozen=True)
class HeldoutTask(ShiftTask):
    """A held-out source -> target pair: a :class:`~benchmarks.shift_tasks.ShiftTask` with an input corruption.

    Attributes:
        corruption: One of :data:`CORRUPTIONS` for an input-level shift, ``""`` for clean target scans.
        image_size: Input size (px) of the source and target models (the 8x8 scans upsampled).
    """

    corruption: str = ""
    image_size: int = IMAGE_SIZE

    @property
    def level(self) -> str:
        """``input`` (a corruption of the scans) or ``output`` (new labels)."""
        return "input" if self.corruption else "output"

    def datamodule(self, shots: int | None, seed: int, **kwargs: Any) -> DigitsDataModule:
        """The target task's DataModule (``shots`` scans per class, drawn with ``seed``) at :attr:`image_size` px."""
        settings: dict[str, Any] = {"classes": self.target_classes, "shots_per_class": shots, "seed": seed}
        settings |= {"image_size": self.image_size, **kwargs}
        if not self.corruption:
            return (InvertedDigits if self.inverted else DigitsDataModule)(**settings)
        return CorruptedDigits(self.corruption, **settings)


ALL = tuple(range(10))
EVEN, ODD = (0, 2, 4, 6, 8), (1, 3, 5, 7, 9)
RESNET, MOBILENET, CONVNEXT = "resnet14t", "mobilenetv3_small_100", "convnext_atto"
TASKS = (
    HeldoutTask("rot90", f"{RESNET}, input: 0-9 -> 0-9 rotated 90°", ALL, ALL, False, RESNET, "rot90"),
    HeldoutTask("split7", f"{RESNET}, output: digits 0-6 -> 7-9", tuple(range(7)), (7, 8, 9), False, RESNET),
    HeldoutTask("blur", f"{MOBILENET}, input: 0-9 -> 0-9 blurred", ALL, ALL, False, MOBILENET, "blur"),
    HeldoutTask("parity", f"{MOBILENET}, output: even digits -> odd digits", EVEN, ODD, False, MOBILENET),
    HeldoutTask("noise", f"{CONVNEXT}, input: 0-9 -> 0-9 low contrast + noise", ALL, ALL, False, CONVNEXT, "noise"),
)
"""The held-out tasks: three input-level and two output-level shifts over three backbone families."""


def timed_fine_tune(job: dict[str, Any]) -> tuple[float, list[str], float]:
    """:func:`~benchmarks.shift_tasks.fine_tune` on one job's arguments, with its wall time (s, data to score)."""
    seconds, (accuracy, lines) = common.timed(lambda: fine_tune(**job))
    return accuracy, lines, seconds
