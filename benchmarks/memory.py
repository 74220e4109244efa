"""Peak resident memory of a linear probe against a full fine-tune, each in a fresh process.

Each child imports lit_transfer, builds ``TransferClassifier("resnet10t")`` and the data, then trains a few steps
at 96x96, batch 32, through a Lightning Trainer. It reports the RSS just before ``fit``, the peak RSS during
``fit`` (``/proc/self/statm`` sampled every millisecond by a thread) and the process's ``ru_maxrss``. The import
of torch alone peaks at several hundred MiB here (CUDA builds map large libraries), so ``ru_maxrss`` can hide the
training peak; the figure compared is the peak during ``fit`` above the RSS before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks import common

IMAGE_SIZE, BATCH, STEPS = 96, 32, 4
MODES = ("idle", "linear_probe", "full_fine_tune")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    """Track the maximum RSS of this process from a background thread."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval, self.peak = interval, _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def child(mode: str) -> None:
    """Run one mode and print its RSS figures (MiB) as JSON."""
    import gc
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
    trainer = common.make_trainer(max_steps=STEPS, limit_val_batches=0)
    gc.collect()
    before = _rss_mb()
    with PeakSampler() as sampler:
        if mode != "idle":
            trainer.fit(model, train_dataloaders=loader)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_fit_mb": before, "fit_peak_mb": sampler.peak, "ru_maxrss_mb": maxrss}))


def measure(mode: str) -> dict[str, float]:
    """RSS figures (MiB) of a fresh child process running ``mode``."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode], capture_output=True, text=True, check=True
    ).stdout
    return {k: float(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def run(quick: bool) -> dict[str, Any]:
    """RSS figures of each mode (medians over repeats, interleaved)."""
    repeats = 1 if quick else 3
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(repeats):
        for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
            samples[mode].append(measure(mode))
    figures = {
        m: {key: common.median([s[key] for s in v]) for key in v[0]}
        | {"fit_extra_mb": common.median([s["fit_peak_mb"] - s["before_fit_mb"] for s in v])}
        for m, v in samples.items()
    }
    probe, full = figures["linear_probe"]["fit_extra_mb"], figures["full_fine_tune"]["fit_extra_mb"]
    target = probe < full
    rows = [
        [
            m,
            f"{figures[m]['before_fit_mb']:.0f}",
            f"{figures[m]['fit_peak_mb']:.0f}",
            f"{figures[m]['fit_extra_mb']:.0f}",
            f"{figures[m]['ru_maxrss_mb']:.0f}",
        ]
        for m in MODES
    ]
    ratio = probe / full if full > 0 else float("nan")
    markdown = "\n\n".join(
        [
            "### Peak memory: linear probe vs full fine-tune",
            f"`{common.BACKBONE}`, {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH}, {STEPS} steps, each mode in a fresh"
            f" process, median of {repeats}; `idle` builds the model, data and Trainer without training. RSS"
            " sampled every millisecond during `fit`; `ru_maxrss` is the whole process's peak, import included.",
            common.md_table(
                ["Mode", "RSS before fit (MiB)", "Peak during fit (MiB)", "Fit peak above before (MiB)", "ru_maxrss"],
                rows,
            ),
            f"Memory a linear probe's fit adds: {probe:.0f} MiB, {ratio:.2f}x a full fine-tune's {full:.0f} MiB."
            f" Expectation (probe below fine-tune): **{common.verdict(target)}**.",
        ]
    )
    return {"figures": figures, "targets": {"linear-probe fit memory < full fine-tune": target}, "markdown": markdown}


if __name__ == "__main__":
    child(sys.argv[1])
