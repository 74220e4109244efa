"""Transfer to multi-label and regression targets: the digit canvases, from the quick start's source model.

Source: the quick start's source recipe (:func:`benchmarks.common.source_weights`): ``resnet10t`` from random init
trained on every training scan of digits 0-4 at :data:`CELL` px, saved without its head.

Target: the digit canvases of :mod:`lit_transfer.demo.canvases` (2x2 grids of :data:`CELL` px cells holding 1-3
scans of the digits 5-9, which the source never saw; each split draws from its own scans), read through
:class:`~lit_transfer.data.CSVDataModule` from the PNG files and CSVs the generator writes:

* multi-label: which digits a canvas shows (``TransferClassifier(task="multilabel")``); scored by the macro average
  precision (mAP, threshold-free) and the macro F1 at the fixed threshold 0.5 on the test canvases;
* regression: the sum of the digits shown (``TransferRegressor``, Huber loss on standardised targets); scored by the
  mean absolute error on the test canvases, in the sum's units.

Each task trains on :data:`TRAIN` canvases with four policies: a linear probe (the frozen source backbone's features
cached once), freeze-unfreeze (head for :data:`UNFREEZE_AT_EPOCH` epochs, then everything), full fine-tuning, and the
same network from random init (``scratch``). Every row: :data:`EPOCHS` epochs, batch :data:`BATCH`, AdamW (lr
:data:`LR`, :data:`LINEAR_PROBE_LR` for the linear probe, weight decay 0.05), the default warmup + cosine schedule, no
augmentation, no validation during training; mean ± std over seeds 0, 1, 2 (the seed draws the head's
initialisation and the training order; the canvases are the same). The transfer gain is fine-tuning minus scratch,
as measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

CELL = 32
"""Cell size (px) of the canvases and input size of the source task: the 64 px canvases hold 32 px digits."""
TRAIN, TEST = 256, 200
EPOCHS = 6
BATCH = 32
LR = 3e-3
LINEAR_PROBE_LR = 1e-2
WEIGHT_DECAY = 0.05
UNFREEZE_AT_EPOCH = 2
SEEDS = (0, 1, 2)
QUICK: dict[str, Any] = {"source_epochs": 2, "epochs": 1, "train": 32, "test": 16, "seeds": (0,)}
"""``--quick``: a smoke test of the code path (a 2-epoch source, one target epoch on 32 canvases, one seed)."""
TASKS = ("multilabel", "regression")


def policies() -> dict[str, dict[str, Any]]:
    """Policy name -> model arguments (``pretrained`` and the task's own are filled in by :func:`train_target`)."""
    from lit_transfer import FreezeUnfreeze, FullFineTune, LinearProbe

    return {
        "linear_probe": {"freeze": LinearProbe(), "lr": LINEAR_PROBE_LR, "cache_features": True},
        f"freeze_unfreeze (at epoch {UNFREEZE_AT_EPOCH})": {"freeze": FreezeUnfreeze(UNFREEZE_AT_EPOCH)},
        "full_fine_tune": {"freeze": FullFineTune()},
        "scratch": {"freeze": FullFineTune(), "scratch": True},
    }


def train_target(
    task: str, spec: dict[str, Any], weights: str, tables: dict[str, Path], seed: int, epochs: int
) -> dict[str, float]:
    """Fit one policy on one task; return its test scores (``map`` and ``f1`` in %, or ``mae``)."""
    import lightning as L
    import torch

    from lit_transfer import TransferClassifier, TransferRegressor
    from lit_transfer.data import CSVDataModule

    L.seed_everything(seed, verbose=False)
    targets: dict[str, Any] = (
        {"label_column": "digits", "label_delimiter": "|"} if task == "multilabel" else {"target_columns": ["sum"]}
    )
    data = CSVDataModule(
        tables["train"],
        test_csv=tables["test"],
        predict_csv=tables["test"],
        val_fraction=0,
        image_size=2 * CELL,
        batch_size=BATCH,
        num_workers=0,
        train_transform="none",
        seed=seed,
        **targets,
    )
    lr = spec.get("lr", LR)
    shared: dict[str, Any] = {
        "pretrained": False if spec.get("scratch") else weights,
        "freeze": spec["freeze"],
        "cache_features": spec.get("cache_features", False),
        "optimizer": lambda groups: torch.optim.AdamW(groups, lr=lr, weight_decay=WEIGHT_DECAY),
    }
    model: Any
    if task == "multilabel":
        model = TransferClassifier(
            common.BACKBONE,
            num_classes=data.num_classes,
            class_names=data.class_names,
            task="multilabel",
            tune_threshold="none",
            **shared,
        )
    else:
        model = TransferRegressor(
            common.BACKBONE,
            num_outputs=1,
            target_names=data.target_names,
            target_stats=data.target_stats,
            loss="huber",
            **shared,
        )
    trainer = common.make_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    outputs = trainer.predict(model, datamodule=data)
    data.setup("test")
    truth = torch.as_tensor(getattr(data.test_dataset, "labels", None))
    return score(task, outputs, truth, data.target_stats)


def score(task: str, outputs: Any, truth: Any, stats: dict[str, list[float]] | None) -> dict[str, float]:
    """Test scores from ``predict_step`` outputs: macro mAP and F1 (%) at 0.5, or the MAE in original units."""
    import torch
    from torchmetrics.functional.classification import multilabel_average_precision, multilabel_f1_score

    if task == "multilabel":
        probs = torch.cat([o["probs"] for o in outputs])
        labels = truth.long()
        count = labels.shape[1]
        return {
            "map": 100.0 * float(multilabel_average_precision(probs, labels, num_labels=count, average="macro")),
            "f1": 100.0 * float(multilabel_f1_score(probs, labels, num_labels=count, average="macro")),
        }
    values = torch.cat([o["values"] for o in outputs]).reshape(len(truth), -1)
    true = truth.reshape(len(truth), -1).double()
    if stats is not None:
        true = true * torch.tensor(stats["std"], dtype=torch.float64) + torch.tensor(stats["mean"], dtype=torch.float64)
    return {"mae": float((values.double() - true).abs().mean())}


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Every task x policy x seed; the table with the measured transfer gains."""
    from lit_transfer.demo.canvases import write_canvases

    common.set_threads(1)
    common.quiet()
    settings: dict[str, Any] = (
        QUICK if quick else {"source_epochs": None, "epochs": EPOCHS, "train": TRAIN, "test": TEST}
    )
    seeds: tuple[int, ...] = QUICK["seeds"] if quick else SEEDS
    weights, meta = common.source_weights(CELL, epochs=settings["source_epochs"])
    table = policies()
    results: dict[str, dict[str, dict[str, list[float]]]] = {task: {name: {} for name in table} for task in TASKS}
    with tempfile.TemporaryDirectory() as folder:
        tables = write_canvases(folder, train=settings["train"], val=0, test=settings["test"], cell=CELL, seed=0)
        for seed in seeds:
            for task in TASKS:
                for name, spec in table.items():
                    scores = train_target(task, spec, str(weights), tables, seed, settings["epochs"])
                    for metric, value in scores.items():
                        results[task][name].setdefault(metric, []).append(value)
    fine_tune = "full_fine_tune"
    gains = {
        "multilabel": [
            a - b for a, b in zip(results["multilabel"][fine_tune]["map"], results["multilabel"]["scratch"]["map"])
        ],
        "regression": [
            b - a for a, b in zip(results["regression"][fine_tune]["mae"], results["regression"]["scratch"]["mae"])
        ],
    }
    rows = [
        [
            name,
            common.fmt_pm(results["multilabel"][name]["map"]),
            common.fmt_pm(results["multilabel"][name]["f1"]),
            common.fmt_pm(results["regression"][name]["mae"], digits=2),
        ]
        for name in table
    ]
    epochs = settings["epochs"]
    markdown = "\n\n".join(
        [
            "### Multi-label and regression transfer: the digit canvases",
            f"Source: the quick start's source recipe, `{common.BACKBONE}` trained from scratch on all training scans"
            f" of digits 0-4 at {CELL}x{CELL} for {meta['epochs']} epochs (source test accuracy"
            f" {meta['source_test_acc']:.1f} %), loaded with a fresh head. Target: {settings['train']} training"
            f" canvases of {2 * CELL}x{2 * CELL} px (`python -m lit_transfer.demo.canvases`: 1-3 scans of the digits"
            " 5-9, which the source never saw, in a 2x2 grid), read from PNG files through `CSVDataModule`; scored on"
            f" {settings['test']} test canvases drawn from held-out scans. Multi-label: which digits a canvas shows"
            " (macro average precision, and macro F1 at the fixed threshold 0.5); regression: the sum of its digits"
            f" (mean absolute error, Huber loss on standardised targets). Every row {epochs} epochs, batch {BATCH},"
            f" AdamW lr {LR:g} (linear probe {LINEAR_PROBE_LR:g}, on cached features), weight decay {WEIGHT_DECAY:g},"
            f" warmup + cosine, no augmentation; mean ± std over {len(seeds)} seed(s).",
            common.md_table(["Policy", "multi-label mAP (%)", "multi-label F1 (%)", "regression MAE (sum)"], rows),
            "Transfer gain, full fine-tuning minus scratch (same budget), as measured:"
            f" multi-label mAP {common.fmt_pm(gains['multilabel'])} points;"
            f" regression MAE {common.fmt_pm(gains['regression'], digits=2)} lower with the source weights"
            " (a negative value: scratch was better).",
        ]
    )
    return {
        "results": results,
        "transfer_gain": {
            "multilabel_map_points": gains["multilabel"],
            "regression_mae_reduction": gains["regression"],
        },
        "source": meta,
        "config": {
            "cell": CELL,
            "train": settings["train"],
            "test": settings["test"],
            "epochs": epochs,
            "batch": BATCH,
            "lr": LR,
            "linear_probe_lr": LINEAR_PROBE_LR,
            "weight_decay": WEIGHT_DECAY,
            "unfreeze_at_epoch": UNFREEZE_AT_EPOCH,
            "seeds": list(seeds),
        },
        "targets": {},
        "markdown": markdown,
    }
