"""The LR finder against a brute-force LR grid on the digits transfer task.

Task: the transfer table's (:mod:`benchmarks.transfer_table`) at 10 scans per class: the cached source model
(``resnet10t`` trained on digits 0-4, :func:`benchmarks.common.source_weights`) fine-tuned on digits 5-9 with
freeze-unfreeze (head only for :data:`UNFREEZE_AT_EPOCH` epochs) and layer decay :data:`LAYER_DECAY`, AdamW
(weight decay 0.05), warmup + cosine, label smoothing 0.1, the digit-safe augmentation, :data:`EPOCHS` epochs at
:data:`IMAGE_SIZE` px.

For each seed (which draws the scans, the head's initialisation, the order and the augmentation):

* the finder: :func:`lit_transfer.find_lr` on the freshly built model (:data:`NUM_STEPS` steps from :data:`MIN_LR`
  to :data:`MAX_LR`; it trains the first phase, the head, keeping the layer-decay ratios, on backbone features
  computed once: the package's default for a head-only first phase), timed; then one
  fine-tune at each rule's suggestion (valley, steep, minimum/10), and at the valley rule's suggestion from the
  same curve smoothed as fastai and Lightning smooth it (:data:`REFERENCE_SMOOTHING`);
* the grid: one fine-tune at each of :data:`GRID` (log-spaced), the best chosen by validation accuracy
  (the 134 validation scans of digits 5-9, never the test split).

Every fine-tune is scored on the fixed test split (225 scans). Goals: the default rule's mean test accuracy within
1 point of the validation-chosen grid LR's; the finder's wall time under 10 % of the fine-tune it precedes (the
fine-tune at its suggestion), as a mean over seeds. The rules are compared on validation accuracy too: the default
rule is the one chosen on the validation split, never on test, and the table says which rule this run's validation
column ranks first.
"""

from __future__ import annotations

import json
import math
from typing import Any

from benchmarks import common

IMAGE_SIZE = 32
SHOTS = 10
EPOCHS = 30
UNFREEZE_AT_EPOCH = 5
LAYER_DECAY = 0.7
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
GRID = tuple(10 ** (-4 + 0.5 * k) for k in range(7))  # 1e-4 ... 1e-1
MIN_LR, MAX_LR, NUM_STEPS = 1e-5, 1.0, 40
REFERENCE_SMOOTHING = 0.98
SEEDS = (0, 1, 2)
REFERENCE = f"valley, smoothing {REFERENCE_SMOOTHING}"
QUICK: dict[str, Any] = {"source_epochs": 2, "epochs": 3, "grid": (1e-3, 1e-2), "seeds": (0,), "num_steps": 10}
"""``--quick``: a smoke test of the code path (a 2-epoch source, 3 target epochs, two grid LRs, one seed)."""


def _setup(weights: str, seed: int, lr: float, epochs: int) -> tuple[Any, Any]:
    import lightning as L
    import torch

    from benchmarks.transfer_table import augmentation
    from lit_transfer import FreezeUnfreeze, TransferClassifier
    from lit_transfer.data import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(
        classes=common.TARGET_CLASSES,
        shots_per_class=SHOTS,
        image_size=IMAGE_SIZE,
        batch_size=16,
        seed=seed,
        train_transform=augmentation(),
        num_workers=0,
    )
    model = TransferClassifier(
        common.BACKBONE,
        num_classes=data.num_classes,
        pretrained=weights,
        freeze=FreezeUnfreeze(unfreeze_at_epoch=min(UNFREEZE_AT_EPOCH, max(1, epochs // 2))),
        layer_decay=LAYER_DECAY,
        label_smoothing=LABEL_SMOOTHING,
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=lr, weight_decay=WEIGHT_DECAY),
    )
    return model, data


def fine_tune(weights: str, seed: int, lr: float, epochs: int) -> dict[str, float]:
    """One fine-tune at ``lr``: validation and test accuracy (%) of its final weights, and its fit time."""
    model, data = _setup(weights, seed, lr, epochs)
    trainer = common.make_trainer(max_epochs=epochs, limit_val_batches=0)
    seconds, _ = common.timed(lambda: trainer.fit(model, datamodule=data))
    evaluator = common.make_trainer(limit_val_batches=1.0)
    val = 100.0 * float(evaluator.validate(model, datamodule=data, verbose=False)[0]["val_acc"])
    return {"val_acc": val, "test_acc": common.test_accuracy(evaluator, model, data), "seconds": seconds}


def timed_range_test(model: Any, data: Any, num_steps: int) -> tuple[float, Any]:
    """``find_lr`` from :data:`MIN_LR` to :data:`MAX_LR` in ``num_steps`` on a fresh Trainer: its seconds and result."""
    from lit_transfer import find_lr

    return common.timed(
        lambda: find_lr(model, data, min_lr=MIN_LR, max_lr=MAX_LR, num_steps=num_steps, trainer=common.make_trainer())
    )


def finder(weights: str, seed: int, epochs: int, num_steps: int, out_dir: str | None = None) -> dict[str, Any]:
    """The range test on the model a fine-tune of ``seed`` would start from: each rule's suggestion and its time."""
    from lit_transfer.tuner.suggest import smooth_losses, suggest_lr

    model, data = _setup(weights, seed, 1e-3, epochs)
    seconds, result = timed_range_test(model, data, num_steps)
    if out_dir is not None:
        result.plot(f"{out_dir}/lr_finder_curve.png")
    reference = suggest_lr(result.lrs, smooth_losses(result.losses, REFERENCE_SMOOTHING), "valley")
    return {
        "suggestions": {**result.suggestions, REFERENCE: reference},
        "seconds": seconds,
        "steps": len(result.lrs),
        "cached_features": result.cached_features,
        "lrs": result.lrs,
        "losses": result.losses,
        "result": result,
    }


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Finder vs grid over seeds; the table, the example curve and the two goals."""
    from lit_transfer.tuner.suggest import DEFAULT_RULE, DEFAULT_SMOOTHING, RULES

    common.set_threads(1)
    common.quiet()
    epochs = QUICK["epochs"] if quick else EPOCHS
    grid: tuple[float, ...] = QUICK["grid"] if quick else GRID
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    num_steps = QUICK["num_steps"] if quick else NUM_STEPS
    weights_path, meta = common.source_weights(IMAGE_SIZE, epochs=QUICK["source_epochs"] if quick else None)
    weights = str(weights_path)
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        found = finder(weights, seed, epochs, num_steps, out_dir if seed == seeds[0] else None)
        found.pop("result")
        by_lr = {lr: fine_tune(weights, seed, lr, epochs) for lr in grid}
        best_lr = max(grid, key=lambda lr: by_lr[lr]["val_acc"])
        rules = {}
        fitted: dict[float, dict[str, float]] = {}  # a fine-tune is deterministic: one per distinct LR
        for rule in (*RULES, REFERENCE):
            lr = found["suggestions"][rule]
            if lr is not None and lr not in fitted:
                fitted[lr] = fine_tune(weights, seed, lr, epochs)
            rules[rule] = {"lr": lr, **(fitted[lr] if lr is not None else {})}
        runs.append({"seed": seed, "finder": found, "grid": by_lr, "grid_best_lr": best_lr, "rules": rules})

    def accs(rule: str) -> list[float]:
        return [r["rules"][rule].get("test_acc", math.nan) for r in runs]

    grid_best = [r["grid"][r["grid_best_lr"]]["test_acc"] for r in runs]
    default = accs(DEFAULT_RULE)
    ratios = [
        r["finder"]["seconds"] / r["rules"][DEFAULT_RULE]["seconds"]
        for r in runs
        if "seconds" in r["rules"][DEFAULT_RULE]
    ]
    accuracy_ok = all(math.isfinite(a) for a in default) and (
        common.mean_std(default)[0] >= common.mean_std(grid_best)[0] - 1.0
    )
    time_ok = bool(ratios) and common.mean_std(ratios)[0] < 0.10
    val_means = {
        rule: common.mean_std([r["rules"][rule].get("val_acc", math.nan) for r in runs])[0]
        for rule in (*RULES, REFERENCE)
    }
    val_best = max((rule for rule in val_means if math.isfinite(val_means[rule])), key=val_means.__getitem__)
    gaps = [a - b for a, b in zip(default, grid_best)]  # paired: the same seed's scans, order and head init
    gap_se = common.mean_std(gaps)[1] / math.sqrt(len(gaps)) if len(gaps) > 1 else math.nan
    cached = all(r["finder"]["cached_features"] for r in runs)
    rows = [
        [
            f"LR finder, {rule}" + (f" (default; smoothing {DEFAULT_SMOOTHING})" if rule == DEFAULT_RULE else ""),
            ", ".join(_lr(r["rules"][rule]["lr"]) for r in runs),
            common.fmt_pm([r["rules"][rule].get("val_acc", math.nan) for r in runs]),
            common.fmt_pm(accs(rule)),
        ]
        for rule in (*RULES, REFERENCE)
    ]
    rows.append(
        [
            "grid best (chosen on validation)",
            ", ".join(_lr(r["grid_best_lr"]) for r in runs),
            common.fmt_pm([r["grid"][r["grid_best_lr"]]["val_acc"] for r in runs]),
            common.fmt_pm(grid_best),
        ]
    )
    for lr in grid:
        rows.append(
            [
                f"grid lr {_lr(lr)}",
                _lr(lr),
                common.fmt_pm([r["grid"][lr]["val_acc"] for r in runs]),
                common.fmt_pm([r["grid"][lr]["test_acc"] for r in runs]),
            ]
        )
    finder_seconds = [r["finder"]["seconds"] for r in runs]
    fit_seconds = [r["rules"][DEFAULT_RULE].get("seconds", math.nan) for r in runs]
    config = {
        "image_size": IMAGE_SIZE,
        "shots": SHOTS,
        "epochs": epochs,
        "unfreeze_at_epoch": min(UNFREEZE_AT_EPOCH, max(1, epochs // 2)),
        "layer_decay": LAYER_DECAY,
        "weight_decay": WEIGHT_DECAY,
        "label_smoothing": LABEL_SMOOTHING,
        "grid": list(grid),
        "min_lr": MIN_LR,
        "max_lr": MAX_LR,
        "num_steps": num_steps,
        "default_rule": DEFAULT_RULE,
        "default_smoothing": DEFAULT_SMOOTHING,
        "reference_smoothing": REFERENCE_SMOOTHING,
        "seeds": list(seeds),
        "augmentation": augmentation_config(),
    }
    markdown = "\n\n".join(
        [
            "### LR finder vs an LR grid: digits 0-4 -> 5-9, 10 scans per class",
            f"The transfer table's task at {SHOTS} scans per class and {IMAGE_SIZE}x{IMAGE_SIZE} px: the cached source"
            f" `{common.BACKBONE}` (digits 0-4, {meta['epochs']} epochs) fine-tuned on digits 5-9 for {epochs} epochs,"
            f" freeze-unfreeze at epoch {config['unfreeze_at_epoch']}, layer decay {LAYER_DECAY}, AdamW (weight decay"
            f" {WEIGHT_DECAY:g}), warmup + cosine, label smoothing {LABEL_SMOOTHING:g}, digit-safe augmentation."
            f" The finder (`find_lr`, {num_steps} steps from {MIN_LR:g} to {MAX_LR:g}, first phase only, layer-decay"
            f" ratios kept, loss smoothing {DEFAULT_SMOOTHING}"
            + (", head steps on backbone features computed once" if cached else ", every step on images")
            + ") runs once per seed on the model the fine-tune starts"
            " from; each rule's suggestion is then fine-tuned, and the valley rule's on the same curve smoothed with"
            f" {REFERENCE_SMOOTHING} (fastai's and Lightning's factor). The grid fine-tunes at {len(grid)} log-spaced"
            " LRs and keeps the one with the best validation accuracy (134 scans). Accuracy (%) of the final weights,"
            f" mean ± std over {len(seeds)} seed(s); LRs are the configured (head) LR, one per seed.",
            common.md_table(["Learning rate from", "lr per seed", "val acc", "test acc"], rows),
            f"Finder wall time {common.fmt_pm(finder_seconds, 2)} s ({runs[0]['finder']['steps']} steps on seed"
            f" {seeds[0]}), the fine-tune at its suggestion {common.fmt_pm(fit_seconds, 1)} s: the finder takes"
            f" {common.fmt_pm([100 * r for r in ratios])} % of it (mean over seeds).",
            f"Selected on validation, never on test: the default rule ({DEFAULT_RULE}, smoothing {DEFAULT_SMOOTHING}),"
            " by the validation column of an earlier run of this benchmark. In this run the validation column ranks"
            f" first: {val_best} ({val_means[val_best]:.1f} %; {DEFAULT_RULE}: {val_means[DEFAULT_RULE]:.1f} %)."
            f" Default rule minus grid best on test, paired by seed: {common.mean_std(gaps)[0]:+.1f} points"
            + (f" (standard error {gap_se:.1f})." if len(gaps) > 1 else "."),
            f"Goals: the default rule"
            f" ({DEFAULT_RULE}) within 1 point of the grid's validation-chosen LR on test:"
            f" **{common.verdict(accuracy_ok)}**; finder under 10 % of the fine-tune:"
            f" **{common.verdict(time_ok)}**.",
            "![LR finder curve](lr_finder_curve.png)",
        ]
    )
    return {
        "runs": runs,
        "config": config,
        "source": meta,
        "validation_best_rule": val_best,
        "default_minus_grid": gaps,
        "targets": {
            "default rule within 1 point of the grid's best": accuracy_ok,
            "finder < 10% of the fine-tune": time_ok,
        },
        "markdown": markdown,
    }


def augmentation_config() -> list[dict[str, Any]]:
    """The training augmentation (the transfer table's), as plain values."""
    from benchmarks.transfer_table import augmentation

    return json.loads(json.dumps(augmentation()))


def _lr(value: float | None) -> str:
    return "none" if value is None else f"{value:.2g}"
