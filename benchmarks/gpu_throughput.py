"""GPU throughput of a resnet50 fine-tune step at 224 px: fp32, bf16-mixed, 16-mixed, channels_last + compile.

Run it on a machine with a CUDA GPU: ``python -m benchmarks.gpu_throughput``; it prints a markdown table of
images/s (median over timed steps after warm-up) with the card's name. It is not part of ``benchmarks.run``
(CPU-only machines have nothing to measure); ``--device cpu --model test_resnet --size 64`` is a smoke test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_transfer import TransferClassifier

SETTINGS = [
    ("fp32", {"precision": "32-true"}, {}),
    ("bf16-mixed", {"precision": "bf16-mixed"}, {}),
    ("16-mixed", {"precision": "16-mixed"}, {}),
    ("16-mixed + channels_last + compile", {"precision": "16-mixed"}, {"channels_last": True, "compile": True}),
]


class StepTimer(L.Callback):
    """Wall time per training step, synchronised with the device."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(trainer)
        self.times.append(time.perf_counter() - self._start)


def measure(model_name: str, size: int, batch: int, steps: int, device: str, trainer_kw: dict, model_kw: dict) -> float:
    """Images per second of a full fine-tune step (median over ``steps`` after 5 warm-up steps)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(batch * (steps + 5), 3, size, size), torch.randint(0, 10, (batch * (steps + 5),)))
    model = TransferClassifier(model_name, num_classes=10, pretrained=False, freeze="full_fine_tune", **model_kw)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        **trainer_kw,
    )
    trainer.fit(model, DataLoader(data, batch_size=batch, num_workers=0))
    return batch / statistics.median(timer.times[5:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every setting and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="gpu")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    rows = {}
    for name, trainer_kw, model_kw in SETTINGS:
        if args.device == "cpu" and name.startswith("16-mixed"):
            continue  # fp16 autocast needs a GPU
        rows[name] = measure(args.model, args.size, args.batch, args.steps, args.device, trainer_kw, model_kw)
    base = rows["fp32"]
    print(f"{args.model} fine-tune at {args.size} px, batch {args.batch}, on {card} (torch {torch.__version__})\n")
    print("| setting | images/s | vs fp32 |\n|---|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.0f} | {value / base:.2f}x |")
    return {"card": card, "images_per_s": rows}


if __name__ == "__main__":
    main()
