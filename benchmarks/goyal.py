"""Goyal et al. 2017: a k-times larger batch with the linear scaling rule and gradual warmup (``LRScaling``).

``test_resnet`` (timm's small ResNet) from scratch on all ten digits at 16x16 — small enough for the 3 seeds x
4 settings on two CPU cores — SGD (momentum 0.9, weight decay 5e-4) with a per-step cosine decay, the same number
of epochs for every setting. Batch B with lr η; batch kB with lr η (no scaling); kB with ``LRScaling`` (linear
rule, η·k) without warmup; kB with ``LRScaling`` and a gradual warmup from η. Test accuracy on the fixed split.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

BASE_BATCH, K, BASE_LR = 32, 4, 0.02


def settings(warmup_epochs: float) -> dict[str, dict[str, Any]]:
    """Setting name -> batch size and callbacks."""
    from lit_transfer import LRScaling

    big = BASE_BATCH * K
    return {
        f"B={BASE_BATCH}, lr {BASE_LR}": {"batch": BASE_BATCH, "callbacks": []},
        f"B={big}, lr {BASE_LR} (no scaling)": {"batch": big, "callbacks": []},
        f"B={big}, linear scaling (lr {BASE_LR * K:g}), no warmup": {
            "batch": big,
            "callbacks": [LRScaling(rule="linear", base_batch_size=BASE_BATCH)],
        },
        f"B={big}, linear scaling + {warmup_epochs:g}-epoch warmup": {
            "batch": big,
            "callbacks": [LRScaling(rule="linear", base_batch_size=BASE_BATCH, warmup_epochs=warmup_epochs)],
        },
    }


def one(batch: int, callbacks: list[Any], seed: int, epochs: int) -> dict[str, Any]:
    """One training run."""
    import torch

    from lit_transfer.optim import WarmupCosine

    steps_per_epoch = -(-1078 // batch)  # training scans of all ten digits (the fixed split)
    return common.digits_run(
        seed=seed,
        epochs=epochs,
        batch_size=batch,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=BASE_LR, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(epochs * steps_per_epoch)),
        scheduler_interval="step",
        callbacks=callbacks,
    )


def run(quick: bool, out_dir: str = "docs/benchmarks") -> dict[str, Any]:
    """Every setting x seed; the two Goyal claims."""
    common.set_threads(1)
    common.quiet()
    epochs = 4 if quick else 8
    seeds = (0,) if quick else (0, 1, 2)
    warmup = 1.0
    names = list(settings(warmup))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for seed in seeds:
        for name, spec in settings(warmup).items():  # fresh callbacks per run
            results[name].append(one(spec["batch"], spec["callbacks"], seed, epochs))
    accs = {name: [r["acc"] for r in runs] for name, runs in results.items()}
    mean = {name: common.mean_std(a)[0] for name, a in accs.items()}
    base, unscaled, _, scaled = names
    claim_match = mean[scaled] >= mean[base] - 1.0
    claim_worse = mean[unscaled] <= mean[scaled] - 2.0
    rows = [
        [
            name,
            common.fmt_pm(accs[name]),
            results[name][0]["steps"],
            f"{common.mean_std([r['seconds'] for r in results[name]])[0]:.1f}",
        ]
        for name in names
    ]
    figure, axes = common.new_figure()
    for name in names:
        schedule = results[name][0]["schedule"]
        lrs = [next(v for k, v in row.items() if k.startswith("lr/")) for row in schedule]
        axes.plot([row["step"] for row in schedule], lrs, label=name)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate (first group)")
    axes.set_title("Goyal et al.: LR per step as applied (seed 0)")
    axes.legend(fontsize=7)
    image = common.save_figure(figure, out_dir, "goyal_lr_schedules.png")
    markdown = "\n\n".join(
        [
            "### Goyal et al.: linear scaling rule + warmup (`LRScaling`)",
            f"`{common.SMALL_BACKBONE}` from scratch, all ten digits at {common.SMALL_SIZE}x{common.SMALL_SIZE}, SGD"
            f" (momentum 0.9, wd 5e-4) + per-step cosine, {epochs} epochs for every setting, k = {K}; test accuracy"
            f" (%) on the fixed split, mean ± std over {len(seeds)} seed(s).",
            common.md_table(["Setting", "Test acc (%)", "Optimizer steps", "Fit time (s)"], rows),
            f"kB with scaling + warmup vs B: {mean[scaled] - mean[base]:+.1f} point (target: within 1 point below:"
            f" **{common.verdict(claim_match)}**). kB without scaling vs kB with scaling + warmup:"
            f" {mean[unscaled] - mean[scaled]:+.1f} point (target: clearly worse, >= 2 points below:"
            f" **{common.verdict(claim_worse)}**).",
            f"![LR schedules]({image})",
        ]
    )
    return {
        "acc": accs,
        "targets": {"kB scaled+warmup within 1 point of B": claim_match, "kB unscaled >= 2 points worse": claim_worse},
        "markdown": markdown,
    }
