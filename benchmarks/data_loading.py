"""Is the DataLoader (default workers) the bottleneck of a CPU fine-tune step?

The digits are written out as PNG files (``DigitsDataModule.write_image_folder``, 64x64) and read back with an
``ImageFolderDataModule`` (default ``num_workers = min(4, cpu_count)``, default ``light`` augmentation). Figures:
the loader alone (one pass, workers warm), and a full fine-tune of ``resnet10t`` through a Trainer fed by that
loader against the same fine-tune fed by the same batches held in memory. Epoch times are of the second epoch
(persistent workers already started), medians over interleaved repeats.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import common

IMAGE_SIZE, BATCH = 64, 32


class InMemory:
    """Pre-collated batches replayed as an iterable (a list would be read as several dataloaders)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def image_folder() -> str:
    """The digits as PNG folders under ``runs/benchmarks/`` (written once)."""
    from lit_transfer.data import DigitsDataModule

    root = common.CACHE_DIR / f"digits_png_{IMAGE_SIZE}"
    if not (root / "train").is_dir():
        DigitsDataModule(image_size=IMAGE_SIZE).write_image_folder(root)
    return str(root)


def _datamodule(root: str, workers: int | None) -> Any:
    from lit_transfer.data import ImageFolderDataModule

    data = ImageFolderDataModule(root, batch_size=BATCH, image_size=IMAGE_SIZE, num_workers=workers)
    data.setup("fit")
    return data


def loader_pass(root: str, batches: int) -> tuple[float, int]:
    """Seconds per batch of the train loader alone (second pass), and the worker count."""
    data = _datamodule(root, None)
    loader = data.train_dataloader()
    for _ in zip(range(batches), loader):  # starts the (persistent) workers
        pass
    start = time.perf_counter()
    n = sum(1 for _ in zip(range(batches), loader))
    return (time.perf_counter() - start) / n, data.num_workers


def fit_epoch(train: Any, batches: int, seed: int) -> float:
    """Seconds per batch of the second epoch of a full fine-tune fed by ``train``."""
    import torch

    from lit_transfer import TransferClassifier

    torch.manual_seed(seed)
    model = TransferClassifier(common.BACKBONE, num_classes=10, pretrained=False, freeze="full_fine_tune")
    timer = common.step_timer()
    trainer = common.make_trainer(max_epochs=2, limit_train_batches=batches, limit_val_batches=0, callbacks=[timer])
    trainer.fit(model, train_dataloaders=train)
    return timer.epoch_times()[-1] / batches


def run(quick: bool) -> dict[str, Any]:
    """Loader time per batch vs step time per batch, and the end-to-end epoch-time ratio."""
    common.set_threads(1)
    common.quiet()
    root = image_folder()
    repeats, batches = (1, 4) if quick else (2, 8)
    in_memory = InMemory([batch for batch, _ in zip(_datamodule(root, 0).train_dataloader(), range(batches))])
    loader_times, workers = [], 0
    fed: dict[str, list[float]] = {"loader": [], "memory": []}
    for r in range(repeats):
        for name in ("loader", "memory") if r % 2 == 0 else ("memory", "loader"):
            source = _datamodule(root, None).train_dataloader() if name == "loader" else in_memory
            fed[name].append(fit_epoch(source, batches, seed=r))
        seconds, workers = loader_pass(root, batches)
        loader_times.append(seconds)
    loader_ms = 1000 * common.median(loader_times)
    with_loader, with_memory = (1000 * common.median(fed[k]) for k in ("loader", "memory"))
    ratio = with_loader / with_memory
    target = ratio <= 1.10
    rows = [
        [f"train loader alone ({workers} workers)", f"{loader_ms:.1f}"],
        ["fine-tune step, batches from the loader", f"{with_loader:.1f}"],
        ["fine-tune step, same batches from memory", f"{with_memory:.1f}"],
    ]
    markdown = "\n\n".join(
        [
            "### Data loading vs the fine-tune step",
            f"Digits as {IMAGE_SIZE}x{IMAGE_SIZE} PNG files read by `ImageFolderDataModule` (default workers,"
            f" `light` augmentation), batch {BATCH}; full fine-tune of `{common.BACKBONE}` on one torch thread;"
            f" {batches} batches per epoch, second epoch timed, {repeats} interleaved repeat(s).",
            common.md_table(["What", "Per batch (ms)"], rows),
            f"Loader time is {loader_ms / with_memory:.1%} of the step time; epoch time fed by the loader / fed from"
            f" memory: **{ratio:.3f}**. Target (the loader is not the bottleneck: ratio <= 1.10):"
            f" **{common.verdict(target)}**.",
        ]
    )
    return {
        "loader_ms": loader_ms,
        "step_ms_loader": with_loader,
        "step_ms_memory": with_memory,
        "ratio": ratio,
        "workers": workers,
        "targets": {"loader-fed / memory-fed epoch <= 1.10": target},
        "markdown": markdown,
    }
