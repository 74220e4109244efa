"""Training-pipeline throughput on one CPU core: Albumentations vs torchvision.transforms.v2.

Pipeline: RandomResizedCrop(224) + HorizontalFlip + ColorJitter + Normalize + to-tensor, applied to the same
decoded uint8 images (64 smooth, natural-looking 256-400 px images generated with a fixed seed). Reports
images/s per library (median of several repeats), their ratio, the CPU and the library versions.

Run: ``python benchmarks/transforms_speed.py [--quick]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torchvision
from albumentations.pytorch import ToTensorV2
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

from benchmarks.common import cpu_name


def make_images(n: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour fields with edges and noise: compress and resize like photos, unlike white noise."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(256, 401, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        channels = []
        for _c in range(3):
            fx, fy, phase = rng.uniform(3, 40), rng.uniform(3, 40), rng.uniform(0, 6.3)
            channels.append(128 + 90 * np.sin(xx / fx + phase) * np.cos(yy / fy))
        image = np.stack(channels, -1)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        image[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.uniform(0, 255, size=3)  # a flat object with hard edges
        image += rng.normal(0, 6, size=image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def albumentations_pipeline() -> A.Compose:
    return A.Compose(
        [
            A.RandomResizedCrop(size=(224, 224), scale=(0.08, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0),
            A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
            ToTensorV2(),
        ],
        seed=0,
    )


def torchvision_pipeline() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(224, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
        ]
    )


def _throughput(fn: Callable[[Any], object], inputs: list, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in inputs:
            fn(item)
        rates.append(len(inputs) / (time.perf_counter() - start))
    return statistics.median(rates)


def run(quick: bool = False) -> dict:
    """Measure both pipelines on one core.

    Args:
        quick: 16 images and 3 repeats instead of 64 and 7.

    Returns:
        Images/s per library, their ratio, the setup and versions.
    """
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    n, repeats = (16, 3) if quick else (64, 7)
    images = make_images(n)
    tensors = [torch.from_numpy(image).permute(2, 0, 1).contiguous() for image in images]  # uint8 CHW for v2
    albu, tv = albumentations_pipeline(), torchvision_pipeline()
    torch.manual_seed(0)
    assert albu(image=images[0])["image"].shape == tv(tensors[0]).shape == (3, 224, 224)
    _throughput(lambda image: albu(image=image), images[:4], 1)  # warm-up
    _throughput(tv, tensors[:4], 1)
    albu_rate = _throughput(lambda image: albu(image=image), images, repeats)
    tv_rate = _throughput(tv, tensors, repeats)
    return {
        "albumentations_img_s": albu_rate,
        "torchvision_v2_img_s": tv_rate,
        "ratio_albu_over_tv": albu_rate / tv_rate,
        "images": n,
        "repeats": repeats,
        "cpu": cpu_name(),
        "threads": 1,
        "versions": {
            "albumentations": A.__version__,
            "opencv": cv2.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    result = run(quick=parser.parse_args().quick)
    print(f"CPU: {result['cpu']} (1 thread); {result['images']} images, median of {result['repeats']} repeats")
    print(", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    print()
    print("| pipeline | images/s |")
    print("|---|---|")
    print(f"| Albumentations | {result['albumentations_img_s']:.0f} |")
    print(f"| torchvision.transforms.v2 | {result['torchvision_v2_img_s']:.0f} |")
    print(f"| ratio (Albumentations / torchvision) | {result['ratio_albu_over_tv']:.2f}x |")


if __name__ == "__main__":
    main()
