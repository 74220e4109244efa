"""Frozen-feature caching: a cached linear probe against an uncached one on the digits target task.

Both are ``TransferClassifier(freeze="linear_probe")`` from the source backbone (digits 0-4) on every training
scan of digits 5-9 (no augmentation), same seed, batch 32, one CPU thread; ``cache_features=True`` computes the
backbone's features in one pass at the start of the first epoch and then trains the classifier on them, with the
training loader's own batch sampler (same batches, same order). Figures: per-epoch training time of the epochs
after the first (median), and test accuracy on the fixed held-out split (full forward pass for both: the cache is
only used during ``fit``).
"""

from __future__ import annotations

from typing import Any

from benchmarks import common, transfer_table

BATCH = 32


def probe(cache: bool, weights: str, image_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """Train one linear probe; return its epoch times (s) and test accuracy (%)."""
    import lightning as L

    from lit_transfer import TransferClassifier
    from lit_transfer.data import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(classes=common.TARGET_CLASSES, image_size=image_size, batch_size=BATCH, seed=seed)
    model = TransferClassifier(
        common.BACKBONE,
        num_classes=data.num_classes,
        pretrained=weights,
        freeze="linear_probe",
        cache_features=cache,
    )
    timer = common.step_timer()
    trainer = common.make_trainer(max_epochs=epochs, callbacks=[timer], limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    return {"epoch_times": timer.epoch_times(), "acc": common.test_accuracy(trainer, model, data)}


def loader_epoch(image_size: int, seed: int = 0) -> float:
    """Seconds to iterate the training loader once (decode, upsample, normalise, collate), no model."""
    import time

    from lit_transfer.data import DigitsDataModule

    data = DigitsDataModule(classes=common.TARGET_CLASSES, image_size=image_size, batch_size=BATCH, seed=seed)
    data.setup("fit")
    loader = data.train_dataloader()
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    """Cached vs uncached linear probe: later-epoch time ratio and accuracy, at 32 px (the task) and 64 px."""
    common.set_threads(1)
    common.quiet()
    # --quick: the transfer table's quick source (one cached file for both smoke tests); else the quick start's
    weights, meta = common.source_weights(32, epochs=transfer_table.QUICK["source_epochs"] if quick else None)
    sizes = (32,) if quick else (32, 64)
    repeats, epochs = (1, 3) if quick else (2, 5)
    rows, figures, targets = [], {}, {}
    for size in sizes:
        results: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for r in range(repeats):
            for cache in (True, False) if r % 2 == 0 else (False, True):
                results[cache].append(probe(cache, str(weights), size, epochs, seed=r))
        later = {c: common.median([t for res in results[c] for t in res["epoch_times"][1:]]) for c in results}
        first = {c: common.median([res["epoch_times"][0] for res in results[c]]) for c in results}
        accs = {c: [res["acc"] for res in results[c]] for c in results}
        loader = common.median([loader_epoch(size) for _ in range(3)])
        speedup = later[False] / later[True]
        gap = abs(common.mean_std(accs[True])[0] - common.mean_std(accs[False])[0])
        targets[f"{size}px: later epochs >= 10x faster"] = speedup >= 10
        targets[f"{size}px: accuracy equal (within 0.5 point)"] = gap <= 0.5
        figures[size] = {"speedup": speedup, "acc_gap": gap, "loader_epoch_ms": 1000 * loader}
        for c in (False, True):
            rows.append(
                [
                    f"{size}x{size}",
                    "cached" if c else "uncached",
                    f"{1000 * first[c]:.0f}",
                    f"{1000 * later[c]:.0f}",
                    f"{1000 * loader:.0f}",
                    common.fmt_pm(accs[c], 2),
                    f"**{speedup:.1f}x** {common.verdict(speedup >= 10)}" if c else "",
                ]
            )
    notes = [
        f"{size}px: accuracy difference {figures[size]['acc_gap']:.2f} point"
        f" ({common.verdict(figures[size]['acc_gap'] <= 0.5)}, target: equal within noise, 0.5 point)"
        for size in sizes
    ]
    markdown = "\n\n".join(
        [
            "### Frozen-feature caching",
            f"Linear probe of the source `{common.BACKBONE}` (pretrained on digits 0-4 at 32x32, {meta['epochs']}"
            " epochs) on all training"
            f" scans of digits 5-9, batch {BATCH}, one CPU thread, {epochs} epochs, {repeats} interleaved"
            " repeat(s) per setting; later epochs = every epoch after the first. The cached probe's first epoch"
            " includes the one pass that computes the features. The loader column is one pass of the training"
            " DataLoader alone (upsample + Albumentations eval pipeline per scan, collate), which the cached"
            " probe no longer runs after its first epoch.",
            common.md_table(
                [
                    "Input",
                    "Probe",
                    "First epoch (ms)",
                    "Later epochs, median (ms)",
                    "Loader pass (ms)",
                    "Test acc (%)",
                    "Speed-up (target >= 10x)",
                ],
                rows,
            ),
            "; ".join(notes) + ".",
        ]
    )
    return {"by_size": figures, "targets": targets, "markdown": markdown}
