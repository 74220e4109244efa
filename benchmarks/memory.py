"""Peak resident memory of a linear probe against a full fine-tune, each in a fresh process.

Each child imports lit_transfer, builds ``TransferClassifier("resnet10t")`` and trains a few steps at 96x96,
batch 32, through a Lightning Trainer, then reports its own peak RSS (``ru_maxrss``). An ``idle`` child builds the
same model and the same data without training: the difference is what training costs on top.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks import common

IMAGE_SIZE, BATCH, STEPS = 96, 32, 4
MODES = ("idle", "linear_probe", "full_fine_tune")


def child(mode: str) -> None:
    """Run one mode and print ``{"peak_rss_mb": ...}`` as JSON."""
    import resource

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    common.set_threads(1)
    common.quiet()
    from lit_transfer import TransferClassifier

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * STEPS, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, 5, (len(x),), generator=generator)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    freeze = "linear_probe" if mode == "idle" else mode
    model = TransferClassifier(common.BACKBONE, num_classes=5, pretrained=False, freeze=freeze)
    if mode != "idle":
        trainer = common.make_trainer(max_steps=STEPS, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=loader)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(mode: str) -> float:
    """Peak RSS (MiB) of a fresh child process running ``mode``."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode], capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])


def run(quick: bool) -> dict[str, Any]:
    """Peak RSS of each mode (median over repeats)."""
    repeats = 1 if quick else 3
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(repeats):
        for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
            samples[mode].append(measure(mode))
    peak = {m: common.median(v) for m, v in samples.items()}
    extra = {m: peak[m] - peak["idle"] for m in MODES[1:]}
    ratio = extra["linear_probe"] / extra["full_fine_tune"] if extra["full_fine_tune"] > 0 else float("nan")
    target = peak["linear_probe"] < peak["full_fine_tune"]
    rows = [[m, f"{peak[m]:.0f}", "" if m == "idle" else f"{extra[m]:.0f}"] for m in MODES]
    markdown = "\n\n".join(
        [
            "### Peak memory: linear probe vs full fine-tune",
            f"`{common.BACKBONE}`, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH}, {STEPS} steps, each mode in a fresh"
            f" process (peak RSS, median of {repeats}); `idle` builds the model and data without training.",
            common.md_table(["Mode", "Peak RSS (MiB)", "Above idle (MiB)"], rows),
            f"Training memory of the linear probe is {ratio:.2f}x that of the full fine-tune (above idle)."
            f" Expectation (probe peak below fine-tune peak): **{common.verdict(target)}**.",
        ]
    )
    return {
        "peak_rss_mb": peak,
        "above_idle_mb": extra,
        "targets": {"linear-probe peak RSS < full fine-tune": target},
        "markdown": markdown,
    }


if __name__ == "__main__":
    child(sys.argv[1])
