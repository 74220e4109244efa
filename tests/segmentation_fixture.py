"""A user's own segmentation data, made on the fly: photo-like images of mixed sizes and formats with their masks.

Each image is a noisy tinted background (class 0) with a bright ellipse (class 1) and a dark rectangle (class 2);
its mask holds those indices pixel for pixel and 255 (ignore) on a thin border around each shape, as annotation
tools leave it. Sizes range from 48 to 333 px and are rarely square; images are JPEG, PNG, grayscale JPEG, RGBA
PNG, palette PNG; masks are 8-bit PNGs, some saved as palette PNGs (the stored values are the indices, as in
Pascal VOC).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("background", "disc", "box")
SIZES = ((64, 48), (200, 150), (96, 96), (48, 120), (333, 141), (120, 90))
"""``(width, height)`` of the images, in turn."""


def _sample(index: int, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    width, height = SIZES[index % len(SIZES)]
    pixels = np.array((90, 120, 160), dtype=np.float32) + rng.normal(0, 30, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", (width, height), 0)
    draw, paint = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    x0, y0 = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
    disc = (x0, y0, x0 + width // 2, y0 + height // 2)
    draw.ellipse(disc, fill=(245, 240, 230))
    paint.ellipse(disc, fill=255)
    paint.ellipse((disc[0] + 1, disc[1] + 1, disc[2] - 1, disc[3] - 1), fill=1)
    box = (width * 2 // 3, height * 2 // 3, width - 2, height - 2)
    draw.rectangle(box, fill=(20, 20, 25))
    paint.rectangle(box, fill=255)
    paint.rectangle((box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1), fill=2)
    return image, np.asarray(mask)


def _save_image(image: Image.Image, folder: Path, stem: str, index: int) -> Path:
    kind = index % 5
    folder.mkdir(parents=True, exist_ok=True)
    if kind == 0:
        path = folder / f"{stem}.jpg"
        image.save(path, quality=92)
    elif kind == 1:
        path = folder / f"{stem}.png"
        image.save(path)
    elif kind == 2:
        path = folder / f"{stem}.jpeg"
        image.convert("L").save(path, format="JPEG")
    elif kind == 3:
        path = folder / f"{stem}.png"
        rgba = image.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(path)
    else:
        path = folder / f"{stem}.png"
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def save_mask(mask: np.ndarray, path: Path, palette: bool = False) -> Path:
    """Save class indices as an 8-bit PNG (a palette PNG with ``palette``, its stored values the indices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        image = Image.fromarray(mask.astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 230, 60, 60, 60, 60, 230] + [255, 255, 255] * 253)
        image.save(path)
    else:
        Image.fromarray(mask.astype(np.uint8), "L").save(path)
    return path


def make_segmentation_folder(
    root: Path, train: int = 12, val: int = 4, test: int = 4, predict: int = 3, classes_file: bool = True, seed: int = 0
) -> Path:
    """Write ``root/{train,val,test}/{images,masks}/``, ``root/predict/`` and ``root/classes.txt``; return ``root``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val), ("test", test)):
        for i in range(count):
            image, mask = _sample(i, rng)
            _save_image(image, root / split / "images", f"{split}_{i:03d}", i)
            save_mask(mask, root / split / "masks" / f"{split}_{i:03d}.png", palette=i % 2 == 1)
    for i in range(predict):
        image, _ = _sample(i + 2, rng)
        _save_image(image, root / "predict", f"unlabelled_{i:02d}", i)
    if classes_file:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def make_segmentation_csv(root: Path, count: int = 10, seed: int = 1) -> Path:
    """Write images and masks under ``root/`` and ``root/train.csv`` (``image,mask``, relative paths); return it."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        image, mask = _sample(i, rng)
        path = _save_image(image, root / "images", f"sample_{i:03d}", i)
        mask_path = save_mask(mask, root / "masks" / f"sample_{i:03d}.png")
        rows.append((path.relative_to(root).as_posix(), mask_path.relative_to(root).as_posix()))
    table = root / "train.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask"])
        writer.writerows(rows)
    return table


def broken_folder(root: Path, fault: str) -> Path:
    """A small segmentation folder with one ``fault``: ``missing``, ``size``, ``range``, ``colour``, ``one_class``,
    ``classes_file`` or ``image`` (a truncated image); return ``root``."""
    make_segmentation_folder(root, train=3, val=1, test=0, predict=0, classes_file=fault != "one_class")
    mask = root / "train" / "masks" / "train_001.png"
    shape = np.asarray(Image.open(mask)).shape
    if fault == "missing":
        mask.unlink()
    elif fault == "size":
        save_mask(np.zeros((shape[0] // 2, shape[1]), np.uint8), mask)
    elif fault == "range":
        save_mask(np.full(shape, 7, np.uint8), mask)
    elif fault == "colour":
        colour = np.zeros((*shape, 3), np.uint8)
        colour[:, : shape[1] // 2] = (230, 60, 60)
        Image.fromarray(colour).save(mask)
    elif fault == "one_class":
        for path in (root / "train" / "masks").iterdir():
            save_mask(np.zeros(np.asarray(Image.open(path)).shape, np.uint8), path)
    elif fault == "classes_file":
        (root / "classes.txt").write_text("background\ndisc\ndisc\n")
    elif fault == "image":
        image = next((root / "train" / "images").glob("train_001.*"))
        image.write_bytes(image.read_bytes()[:40])
    return root
