"""A user's own photos, made on the fly: class folders and a CSV of photo-like files of mixed sizes and formats.

Four classes whose images differ by a colour cast and a shape, so a tiny model can learn them in a few epochs.
Sizes range from 48 to 400 px, formats and modes cover what phones, scanners and exports produce (JPEG, PNG,
grayscale, RGBA, palette, 16-bit PNG), and the folder holds what real folders hold too: a truncated JPEG and a
stray ``notes.txt``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("cat", "dog", "fox", "owl")
_TINTS = {"cat": (200, 80, 60), "dog": (60, 160, 70), "fox": (70, 90, 200), "owl": (200, 190, 60)}
_SIZES = ((48, 64), (400, 300), (120, 90), (64, 200), (256, 256), (90, 60), (333, 141))


def _photo(cls: str, index: int, rng: np.random.Generator) -> Image.Image:
    """A noisy photo-like RGB image of class ``cls``: tinted background, a class-specific shape."""
    width, height = _SIZES[index % len(_SIZES)]
    tint = np.array(_TINTS[cls], dtype=np.float32)
    pixels = tint + rng.normal(0, 35, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    shape = CLASSES.index(cls)
    if shape == 0:
        draw.ellipse(box, fill=(250, 250, 250))
    elif shape == 1:
        draw.rectangle(box, fill=(10, 10, 10))
    elif shape == 2:
        draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=(250, 250, 250))
    else:
        draw.line([(0, 0), (width, height)], fill=(10, 10, 10), width=max(3, width // 10))
    return image


def _save(image: Image.Image, folder: Path, stem: str, index: int) -> Path:
    """Save in one of the formats and modes users' folders hold, chosen by ``index``."""
    kind = index % 6
    if kind == 0:
        path = folder / f"{stem}.jpg"
        image.save(path, quality=90)
    elif kind == 1:
        path = folder / f"{stem}.png"
        image.save(path)
    elif kind == 2:
        path = folder / f"{stem}.JPEG"
        image.convert("L").save(path, format="JPEG")
    elif kind == 3:
        path = folder / f"{stem}.png"
        rgba = image.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(path)
    elif kind == 4:
        path = folder / f"{stem}.png"
        gray16 = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(gray16).save(path)  # mode I;16
    else:
        path = folder / f"{stem}.png"
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    """Write a JPEG cut off half-way, as an interrupted copy leaves it."""
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (120, 40, 40)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def make_photo_folder(
    root: Path,
    per_class: int = 12,
    val_per_class: int = 4,
    test_per_class: int = 4,
    predict: int = 6,
    bad_files: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val,test}/<class>/``, ``root/predict/`` (and bad files) and return ``root``.

    With ``bad_files``, ``train/cat/broken.jpg`` is a truncated JPEG and ``train/notes.txt`` a stray text file.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class), ("test", test_per_class)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _save(_photo(cls, i, rng), folder, f"{cls}_{split}_{i:03d}", i)
    predict_dir = root / "predict"
    predict_dir.mkdir(parents=True, exist_ok=True)
    for i in range(predict):
        cls = CLASSES[i % len(CLASSES)]
        _save(_photo(cls, i + 3, rng), predict_dir, f"unlabelled_{i:02d}", i)
    if bad_files:
        truncated_jpeg(root / "train" / "cat" / "broken.jpg")
        (root / "train" / "notes.txt").write_text("shot on my phone, march\n")
    return root


def make_photo_csv(root: Path, per_class: int = 12, seed: int = 1) -> Path:
    """Write photos under ``root/images/`` and ``root/train.csv`` (``path,label``, relative paths); return the CSV."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls in CLASSES:
        for i in range(per_class):
            path = _save(_photo(cls, i, rng), images, f"{cls}_{i:03d}", i)
            rows.append((path.relative_to(root).as_posix(), cls))
    csv_path = root / "train.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return csv_path


SHAPES = ("circle", "square", "triangle", "stripe")
"""The labels of :func:`make_multilabel_csv`: the shapes a photo shows, each in its own quarter."""


def _shapes_photo(shapes: tuple[str, ...], index: int, rng: np.random.Generator, level: float = 120.0) -> Image.Image:
    """A noisy grey photo of brightness ``level`` showing each of ``shapes`` in its own quarter of the frame."""
    width, height = _SIZES[index % len(_SIZES)]
    pixels = np.full((height, width, 3), level, dtype=np.float32) + rng.normal(0, 25, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        q = SHAPES.index(shape)
        x0, y0 = (q % 2) * width // 2, (q // 2) * height // 2
        box = (x0 + width // 10, y0 + height // 10, x0 + 2 * width // 5, y0 + 2 * height // 5)
        if shape == "circle":
            draw.ellipse(box, fill=(250, 40, 40))
        elif shape == "square":
            draw.rectangle(box, fill=(20, 20, 220))
        elif shape == "triangle":
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=(30, 200, 30))
        else:
            draw.line([(box[0], box[1]), (box[2], box[3])], fill=(250, 250, 250), width=max(3, width // 12))
    return image


def make_multilabel_csv(root: Path, count: int = 40, seed: int = 2, delimiter: str = "|") -> Path:
    """Write photos showing 1-3 of :data:`SHAPES` and ``root/multilabel.csv`` (``path,shapes``; the shapes joined by
    ``delimiter``); return the CSV."""
    rng = np.random.default_rng(seed)
    images = root / "shapes"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        chosen = set(rng.choice(SHAPES, size=int(rng.integers(1, 4)), replace=False).tolist())
        shown = tuple(s for s in SHAPES if s in chosen)
        path = _save(_shapes_photo(shown, i, rng), images, f"shapes_{i:03d}", i)
        rows.append((path.relative_to(root).as_posix(), delimiter.join(shown)))
    return _write_rows(root / "multilabel.csv", ["path", "shapes"], rows)


def make_regression_csv(root: Path, count: int = 40, seed: int = 3) -> Path:
    """Write photos and ``root/regression.csv`` (``path,brightness,shapes``: the background level in 0-255 and the
    number of shapes shown); return the CSV."""
    rng = np.random.default_rng(seed)
    images = root / "levels"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        level = float(rng.uniform(40, 215))
        shown = SHAPES[: int(rng.integers(0, 4))]
        path = _save(_shapes_photo(shown, i, rng, level), images, f"level_{i:03d}", i)
        rows.append((path.relative_to(root).as_posix(), f"{level:.1f}", str(len(shown))))
    return _write_rows(root / "regression.csv", ["path", "brightness", "shapes"], rows)


def _write_rows(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
