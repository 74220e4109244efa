"""The transfer table: freezing policies on digits 0-4 -> 5-9 with 1, 5 and 10 labelled scans per class.

A ``resnet10t`` is pretrained once on the source digits 0-4 at 32x32 (:func:`benchmarks.common.source_weights`)
and fine-tuned on the target digits 5-9 with each policy; ``scratch`` trains the same architecture from random
init. Every run: AdamW (lr 1e-3, weight decay 0.05; 1e-2 for the linear probe, whose head alone trains), the
default warmup + cosine schedule, batch ``min(16, 5 x shots)``, a fixed number of epochs, no augmentation, and is
scored on the fixed held-out test split of digits 5-9 (the same scans for every run). Mean ± std over seeds; the
seed draws the few-shot scans, the head's initialisation and the order.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

LAYER_DECAY = 0.7


def policies(epochs: int) -> dict[str, dict[str, Any]]:
    """Policy name -> ``TransferClassifier`` arguments (``pretrained`` is filled in by the caller)."""
    from lit_transfer import FreezeUnfreeze, FullFineTune, GradualUnfreeze, LinearProbe

    unfreeze = max(1, epochs // 5)
    table: dict[str, dict[str, Any]] = {
        "scratch": {"freeze": FullFineTune(), "scratch": True},
        "linear_probe": {"freeze": LinearProbe(), "lr": 1e-2},
        f"freeze_unfreeze (at epoch {unfreeze})": {"freeze": FreezeUnfreeze(unfreeze_at_epoch=unfreeze)},
        "gradual_unfreeze (every 2 epochs)": {"freeze": GradualUnfreeze(every_n_epochs=2)},
        "full_fine_tune": {"freeze": FullFineTune()},
    }
    for name in list(table)[2:]:
        table[f"{name} + layer decay {LAYER_DECAY}"] = {**table[name], "layer_decay": LAYER_DECAY}
    return table


def train_target(spec: dict[str, Any], weights: str, shots: int, seed: int, epochs: int) -> float:
    """Fine-tune one policy on the target task; return its test accuracy (%)."""
    import lightning as L
    import torch

    from lit_transfer import TransferClassifier
    from lit_transfer.data import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(
        classes=common.TARGET_CLASSES, shots_per_class=shots, image_size=32, batch_size=min(16, 5 * shots), seed=seed
    )
    lr = spec.get("lr", 1e-3)
    model = TransferClassifier(
        common.BACKBONE,
        num_classes=data.num_classes,
        pretrained=False if spec.get("scratch") else weights,
        freeze=spec["freeze"],
        layer_decay=spec.get("layer_decay"),
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=lr, weight_decay=0.05),
    )
    trainer = common.make_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    return common.test_accuracy(trainer, model, data)


def plot(results: dict[str, dict[int, list[float]]], shots: tuple[int, ...], out_dir: str) -> str:
    """Accuracy vs shots per class, one line per policy (error bars: std over seeds)."""
    figure, axes = common.new_figure(7.5, 4.2)
    for name, by_shots in results.items():
        means = [common.mean_std(by_shots[k])[0] for k in shots]
        stds = [common.mean_std(by_shots[k])[1] for k in shots]
        style = "--" if "layer decay" in name else "-"
        axes.errorbar(shots, means, yerr=stds, label=name, linestyle=style, marker="o", capsize=3)
    axes.axhline(95, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("labelled scans per class (digits 5-9)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_xticks(list(shots))
    axes.set_title("Transfer from digits 0-4 (resnet10t, 32x32)")
    axes.legend(fontsize=6.5, loc="lower right")
    return common.save_figure(figure, out_dir, "transfer_accuracy_vs_shots.png")


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Every policy x shots x seed; the table, the plot and the 95 %-at-10-shots goal."""
    common.set_threads(1)
    common.quiet()
    epochs = 10 if quick else 20
    shots = (1, 10) if quick else (1, 5, 10)
    seeds = (0,) if quick else (0, 1, 2)
    weights, meta = common.source_weights(32)
    table = policies(epochs)
    results: dict[str, dict[int, list[float]]] = {name: {k: [] for k in shots} for name in table}
    for seed in seeds:
        for k in shots:
            for name, spec in table.items():
                results[name][k].append(train_target(spec, str(weights), k, seed, epochs))
    rows = [[name, *(common.fmt_pm(results[name][k]) for k in shots)] for name in table]
    best_name = max(table, key=lambda n: common.mean_std(results[n][shots[-1]])[0])
    best = common.mean_std(results[best_name][shots[-1]])[0]
    goal = best >= 95.0
    image = plot(results, shots, out_dir)
    markdown = "\n\n".join(
        [
            "### Transfer table: digits 0-4 -> 5-9",
            f"Source: `{common.BACKBONE}` trained from scratch on all training scans of digits 0-4 at 32x32 for"
            f" {meta['epochs']} epochs (source test accuracy {meta['source_test_acc']:.1f} %). Target: digits"
            f" 5-9 with k scans per class, {epochs} epochs, batch min(16, 5k), test accuracy (%) on the fixed"
            f" held-out split of digits 5-9, mean ± std over {len(seeds)} seed(s). Layer decay {LAYER_DECAY}:"
            f" group i from the head trains at lr x {LAYER_DECAY}^i.",
            common.md_table(["Policy", *(f"{k} shot{'s' if k > 1 else ''}/class" for k in shots)], rows),
            f"Best at {shots[-1]} shots: {best_name}, {best:.1f} %. Goal >= 95 % at 10 shots:"
            f" **{common.verdict(goal)}**" + ("" if shots[-1] == 10 else " (10 shots not run)") + ".",
            f"![accuracy vs shots]({image})",
        ]
    )
    return {
        "results": results,
        "best": {"policy": best_name, "acc": best},
        "source": meta,
        "targets": {"best policy >= 95% at 10 shots": goal},
        "markdown": markdown,
    }
