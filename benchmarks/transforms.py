"""Albumentations vs torchvision.transforms.v2 training-pipeline throughput (wraps ``transforms_speed.run``)."""

from __future__ import annotations

from typing import Any

from benchmarks import common, transforms_speed


def run(quick: bool) -> dict[str, Any]:
    """Images/s of both pipelines on one core, and their ratio."""
    result = transforms_speed.run(quick)
    ratio = float(result["ratio_albu_over_tv"])
    target = ratio >= 1.0
    rows = [
        ["Albumentations", f"{result['albumentations_img_s']:.0f}"],
        ["torchvision.transforms.v2", f"{result['torchvision_v2_img_s']:.0f}"],
    ]
    markdown = "\n\n".join(
        [
            "### Augmentation pipeline throughput",
            "RandomResizedCrop(224) + horizontal flip + ColorJitter + Normalize + to-tensor on the same decoded"
            f" 256-400 px images ({result['images']} images, median of {result['repeats']} repeats, one core;"
            " `benchmarks/transforms_speed.py`).",
            common.md_table(["Library", "Images/s"], rows),
            f"Albumentations / torchvision v2: **{ratio:.2f}x** (expectation: Albumentations at least as fast:"
            f" **{common.verdict(target)}**).",
        ]
    )
    figures = {k: v for k, v in result.items() if k != "versions"}
    return {**figures, "targets": {"Albumentations >= torchvision v2 throughput": target}, "markdown": markdown}
