"""Step-time overhead of lit_transfer's training step against a hand-written PyTorch loop on the same model.

Both sides train a randomly initialised ``resnet10t`` on the same in-memory tensors (DataLoader over a
``TensorDataset``, no workers), with AdamW over the same parameters and a per-step LambdaLR. The lit_transfer
side is a ``TransferClassifier`` with ``freeze=FreezeUnfreeze(unfreeze_at_epoch=0)`` (so ``LayerFreezing`` runs
but every group trains, the same compute as the plain loop), ``LRScaling`` with a warmup that lasts the whole
run (its optimizer hooks fire every step), ``RunReport`` (per-step rows) and ``NonFiniteLossGuard``, through a
Lightning ``Trainer`` with the progress bar and the logger off (``self.log`` and the torchmetrics updates still
run). A step is the interval between two consecutive batch starts (data fetch, forward, backward, optimizer
step, every hook), warm-up steps skipped; the two sides alternate within each repeat and the figure is the
ratio of median step times.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import common

IMAGE_SIZE, BATCH, CLASSES = 32, 32, 5


def _loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH * 64, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    y = torch.randint(0, CLASSES, (len(x),), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=generator)


def lightning_steps(warmup: int, steps: int, seed: int = 0) -> list[float]:
    """Step times of the lit_transfer side (seconds)."""
    from lit_transfer import FreezeUnfreeze, LRScaling, TransferClassifier
    from lit_transfer.callbacks import RunReport

    torch.manual_seed(seed)
    model = TransferClassifier(
        common.BACKBONE,
        num_classes=CLASSES,
        pretrained=False,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=0),
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.05),
    )
    timer = common.step_timer()
    with tempfile.TemporaryDirectory() as out:
        callbacks = [
            LRScaling(rule="linear", base_batch_size=BATCH, warmup_steps=10_000),
            RunReport(output_dir=out, plots=False, summary=False),
            timer,
        ]
        trainer = common.make_trainer(max_steps=warmup + steps + 1, callbacks=callbacks, limit_val_batches=0)
        trainer.fit(model, train_dataloaders=_loader(seed))
    return timer.step_times(skip=warmup)[:steps]


def plain_steps(warmup: int, steps: int, seed: int = 0) -> list[float]:
    """Step times of a hand-written loop: same model, data, batch, optimizer and per-step schedule."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(common.BACKBONE, num_classes=CLASSES, pretrained=False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    starts: list[float] = []
    total = warmup + steps + 1
    for x, y in _loader(seed):
        starts.append(time.perf_counter())
        if len(starts) > total:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
    return [b - a for a, b in zip(starts[warmup:], starts[warmup + 1 :])][:steps]


def run(quick: bool) -> dict[str, Any]:
    """Interleave both sides ``repeats`` times and compare median step times."""
    common.set_threads(1)
    common.quiet()
    repeats, warmup, steps = (2, 3, 8) if quick else (5, 5, 20)
    lit: list[float] = []
    plain: list[float] = []
    per_repeat: list[float] = []
    for r in range(repeats):
        order = [("lit", lightning_steps), ("plain", plain_steps)]
        if r % 2:
            order.reverse()
        medians: dict[str, float] = {}
        for name, fn in order:
            times = fn(warmup, steps, seed=r)
            (lit if name == "lit" else plain).extend(times)
            medians[name] = common.median(times)
        per_repeat.append(medians["lit"] / medians["plain"])
    ratio = common.median(lit) / common.median(plain)
    target = ratio <= 1.05
    rows = [
        ["lit_transfer (Trainer + callbacks)", f"{1000 * common.median(lit):.1f}", len(lit)],
        ["plain PyTorch loop", f"{1000 * common.median(plain):.1f}", len(plain)],
    ]
    markdown = "\n\n".join(
        [
            "### Training-step overhead",
            f"`{common.BACKBONE}` (random init), {IMAGE_SIZE}x{IMAGE_SIZE} inputs, batch {BATCH}, AdamW, one CPU"
            f" thread; {repeats} interleaved repeats x {steps} steps after {warmup} warm-up steps. lit_transfer"
            " side: `TransferClassifier` with `LayerFreezing` (all groups trainable), `LRScaling` (warmup active),"
            " `RunReport`, `NonFiniteLossGuard`; progress bar and logger off, `self.log` and metrics on.",
            common.md_table(["Side", "Median step (ms)", "Steps timed"], rows),
            f"Step-time ratio lit_transfer / plain: **{ratio:.3f}** (median of per-repeat ratios"
            f" {common.median(per_repeat):.3f}; per repeat: {', '.join(f'{v:.3f}' for v in per_repeat)})."
            f" Target <= 1.05: **{common.verdict(target)}**.",
        ]
    )
    return {
        "lit_ms": 1000 * common.median(lit),
        "plain_ms": 1000 * common.median(plain),
        "ratio": ratio,
        "per_repeat_ratios": per_repeat,
        "targets": {"step-time ratio <= 1.05": target},
        "markdown": markdown,
    }
