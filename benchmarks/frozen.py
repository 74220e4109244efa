"""Step time of a linear probe against a full fine-tune: a frozen backbone costs its forward pass only.

``TransferClassifier`` on ``resnet10t`` (random init; the weights do not change the cost) at 64x64, batch 32,
in-memory tensors, one CPU thread, through a Lightning Trainer (progress bar and logger off). Frozen groups have
``requires_grad=False``, so autograd records nothing for them and no backward runs through the backbone. The two
policies alternate within each repeat; medians of steady-state step times.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import common

IMAGE_SIZE, BATCH, CLASSES = 64, 32, 5


def policy_steps(freeze: str, warmup: int, steps: int, seed: int = 0) -> list[float]:
    """Steady-state step times (s) of ``TransferClassifier(freeze=freeze)``."""
    from lit_transfer import TransferClassifier

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH * (warmup + steps + 2), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, CLASSES, (len(x),), generator=generator)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=generator)
    torch.manual_seed(seed)
    model = TransferClassifier(common.BACKBONE, num_classes=CLASSES, pretrained=False, freeze=freeze)
    timer = common.step_timer()
    trainer = common.make_trainer(max_steps=warmup + steps + 1, callbacks=[timer], limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    return timer.step_times(skip=warmup)[:steps]


def run(quick: bool) -> dict[str, Any]:
    """Linear probe vs full fine-tune step time, interleaved."""
    common.set_threads(1)
    common.quiet()
    repeats, warmup, steps = (2, 2, 5) if quick else (4, 3, 10)
    samples: dict[str, list[float]] = {"linear_probe": [], "full_fine_tune": []}
    for r in range(repeats):
        names = list(samples) if r % 2 == 0 else list(reversed(samples))
        for name in names:
            samples[name].extend(policy_steps(name, warmup, steps, seed=r))
    probe, full = common.median(samples["linear_probe"]), common.median(samples["full_fine_tune"])
    ratio = probe / full
    target = ratio <= 0.4
    rows = [
        ["linear_probe (backbone frozen)", f"{1000 * probe:.1f}"],
        ["full_fine_tune", f"{1000 * full:.1f}"],
    ]
    markdown = "\n\n".join(
        [
            "### Frozen backbone: linear probe vs full fine-tune",
            f"`{common.BACKBONE}`, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH}, AdamW, one CPU thread, Lightning"
            f" Trainer; {repeats} interleaved repeats x {steps} steps after {warmup} warm-up steps.",
            common.md_table(["Policy", "Median step (ms)"], rows),
            f"Linear-probe / full fine-tune step time: **{ratio:.3f}**. Target <= 0.4: **{common.verdict(target)}**.",
        ]
    )
    return {
        "linear_probe_ms": 1000 * probe,
        "full_fine_tune_ms": 1000 * full,
        "ratio": ratio,
        "targets": {"linear-probe / full step time <= 0.4": target},
        "markdown": markdown,
    }
